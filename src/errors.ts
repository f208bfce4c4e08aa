/** What an error says, whatever was thrown (an Error, or anything else). */
export const errorMessage = (err: unknown): string => (err instanceof Error ? err.message : String(err));
