/**
 * The Redis store's scripts, one per queue operation, each atomic on the server and applying the
 * rules of `queue/ring.ts` and `queue/leases.ts` (the store contract, test/store.test.ts, holds
 * them to the same answers as the LMDB store). The formats they share with redis.ts are defined
 * here once:
 * - a lease, in the queue's `…:l` hash: `deadline:deliveries` (`leaseValue`);
 * - a leased position, in the `…:d` sorted set by deadline: the position zero-padded to 10 digits
 *   (`member`), so that equal deadlines come in position order, as on LMDB;
 * - a lease token: `deliveries-deadline`, `leaseToken` of queue/leases.ts.
 */
import type { Lease } from '../queue/leases.js';
import { DEFAULT_MAXQUEUE } from '../queue/ring.js';

const WIDTH = 10;
/** A position as a member of the deadlines' sorted set (in Lua: `member('pos')`). */
export const memberOf = (pos: number): string => String(pos).padStart(WIDTH, '0');
const member = (lua: string) => `string.format('%0${WIDTH}d', ${lua})`;
/** A lease as stored in the leases' hash, and back. */
export const leaseValueOf = (l: Lease): string => `${l.deadline}:${l.deliveries}`;
export function parseLeaseValue(v: string): Lease {
  const [deadline, deliveries] = v.split(':').map(Number);
  return { deadline: deadline!, deliveries: deliveries! };
}
const leaseValue = (deadline: string, deliveries: string) => `${deadline} .. ':' .. ${deliveries}`;
// The same token as `leaseToken` gives, for an ack or nack to name the grant it settles.
const token = (deliveries: string, deadline: string) => `${deliveries} .. '-' .. ${deadline}`;

// KEYS: state, messages, leases. ARGV: channel, origin, the messages. Returns {1 if it created the queue else 0, positions...}.
export const PUT = `
local s = redis.call('HMGET', KEYS[1], 'p', 'g', 'm')
local created = s[1] == false and s[3] == false
local p, g, mx = tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or ${DEFAULT_MAXQUEUE}
local out = {0}
for i = 3, #ARGV do
  local n = p + 1
  if n == g then break end
  if n > mx then
    if g <= 1 then break end
    n = 1
  end
  if redis.call('HEXISTS', KEYS[3], n) == 1 then break end
  p = n
  redis.call('HSET', KEYS[2], n, ARGV[i])
  out[#out + 1] = n
end
if #out > 1 then
  redis.call('HSET', KEYS[1], 'p', p, 'g', g, 'm', mx)
  redis.call('PUBLISH', ARGV[1], ARGV[2] .. ':' .. (#out - 1))
  if created then out[1] = 1 end
end
return out`;

// KEYS: state, messages, leases, deadlines. ARGV: channel, origin, now, lease ms (0: none), max, byte budget (-1: none).
// Returns {pos, message, deliveries, token ('' unleased)} per message.
export const GET = `
local s = redis.call('HMGET', KEYS[1], 'p', 'g', 'm')
local p, g, mx = tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or ${DEFAULT_MAXQUEUE}
local now, leaseMs, max, budget = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local out = {}
local moved = false
local bytes = 0
while #out < 4 * max do
  local pos, deliveries
  local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 1)
  if #due > 0 then
    pos = tonumber(due[1])
    deliveries = tonumber(string.match(redis.call('HGET', KEYS[3], pos), ':(%d+)$')) + 1
  else
    if g == 0 and p > 0 then pos = 1
    elseif g < p then pos = g + 1
    elseif g > p then
      if g < mx then pos = g + 1 else pos = 1 end
    else break end
    deliveries = 1
  end
  -- A position with no message (an import can leave one) is passed over, its lease dropped.
  local message = redis.call('HGET', KEYS[2], pos)
  -- Decided before anything changes: a message that does not fit the reply stays where it is.
  if message and #out > 0 and budget >= 0 and bytes + #message > budget then break end
  if #due == 0 then
    g = pos
    moved = true
  end
  local token = ''
  if message and leaseMs > 0 then
    local deadline = string.format('%d', now + leaseMs)
    redis.call('HSET', KEYS[3], pos, ${leaseValue('deadline', 'deliveries')})
    redis.call('ZADD', KEYS[4], deadline, ${member('pos')})
    token = ${token('deliveries', 'deadline')}
  elseif #due > 0 then
    redis.call('HDEL', KEYS[3], pos)
    redis.call('ZREM', KEYS[4], ${member('pos')})
  end
  if message then
    bytes = bytes + #message
    out[#out + 1] = pos
    out[#out + 1] = message
    out[#out + 1] = deliveries
    out[#out + 1] = token
  end
end
if moved then redis.call('HSET', KEYS[1], 'p', p, 'g', g, 'm', mx) end
return out`;

// KEYS: leases, deadlines. ARGV: channel, origin, pos, 'ack'|'nack', token ('' for any). Returns 1 when settled.
export const SETTLE = `
local l = redis.call('HGET', KEYS[1], ARGV[3])
if not l then return 0 end
local deadline, deliveries = string.match(l, '^(%d+):(%d+)$')
if ARGV[5] ~= '' and ARGV[5] ~= ${token('deliveries', 'deadline')} then return 0 end
if ARGV[4] == 'ack' then
  redis.call('HDEL', KEYS[1], ARGV[3])
  redis.call('ZREM', KEYS[2], ${member('ARGV[3]')})
else
  redis.call('HSET', KEYS[1], ARGV[3], ${leaseValue("'0'", 'deliveries')})
  redis.call('ZADD', KEYS[2], 0, ${member('ARGV[3]')})
  redis.call('PUBLISH', ARGV[1], ARGV[2] .. ':1')
end
return 1`;

// KEYS: leases, deadlines. ARGV: pos, token ('' for any), now, new deadline. Returns the new token, or nil.
export const TOUCH = `
local l = redis.call('HGET', KEYS[1], ARGV[1])
if not l then return false end
local deadline, deliveries = string.match(l, '^(%d+):(%d+)$')
if tonumber(deadline) <= tonumber(ARGV[3]) then return false end
if ARGV[2] ~= '' and ARGV[2] ~= ${token('deliveries', 'deadline')} then return false end
redis.call('HSET', KEYS[1], ARGV[1], ${leaseValue('ARGV[4]', 'deliveries')})
redis.call('ZADD', KEYS[2], ARGV[4], ${member('ARGV[1]')})
return ${token('deliveries', 'ARGV[4]')}`;

// KEYS: state. ARGV: the new maxqueue. Returns 0 (refused), 1 (set) or 2 (set, and the queue is new).
export const MAXQUEUE = `
local s = redis.call('HMGET', KEYS[1], 'p', 'g', 'm')
local created = s[1] == false and s[3] == false
local p, g, num = tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(ARGV[1])
if num >= p and num >= g and p >= g then
  redis.call('HSET', KEYS[1], 'p', p, 'g', g, 'm', num)
  if created then return 2 end
  return 1
end
return 0`;

// KEYS: state, leases. Returns {putpos, getpos, maxqueue, leases held}.
export const STATUS = `
local s = redis.call('HMGET', KEYS[1], 'p', 'g', 'm')
return {tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or ${DEFAULT_MAXQUEUE}, redis.call('HLEN', KEYS[2])}`;

// Stored messages from ARGV[1] on, ARGV[2] positions, as many as fit in ARGV[3] bytes (-1: all).
export const RANGE = `
local out, bytes, budget = {}, 0, tonumber(ARGV[3])
for pos = tonumber(ARGV[1]), tonumber(ARGV[1]) + tonumber(ARGV[2]) - 1 do
  if redis.call('HEXISTS', KEYS[1], pos) == 1 then
    local size = redis.call('HSTRLEN', KEYS[1], pos)
    if #out > 0 and budget >= 0 and bytes + size > budget then break end
    bytes = bytes + size
    out[#out + 1] = pos
    out[#out + 1] = redis.call('HGET', KEYS[1], pos)
  end
end
return out`;
