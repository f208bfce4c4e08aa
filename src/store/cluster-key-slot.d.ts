/** The cluster slot of a key, as Redis computes it (CRC16 of the hash tag); ships without types. */
declare module 'cluster-key-slot' {
  export default function calculateSlot(key: string | Buffer): number;
}
