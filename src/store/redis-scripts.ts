/**
 * The Redis store's scripts, one per queue operation, each atomic on the server and applying the
 * rules of `queue/ring.ts`, `queue/leases.ts` and `store/plans.ts` (the store contract,
 * test/store.test.ts, holds them to the same answers as the LMDB store). The formats they share
 * with redis.ts are defined here once:
 * - a lease, in the queue's `…:l` hash: `deadline:deliveries` (`leaseValue`); a delayed message
 *   and a dead letter (deadline DEAD + when it died) are leases too, as in leases.ts;
 * - a lease that can come due (every one but a dead letter), in the `…:d` sorted set by deadline:
 *   the position zero-padded to 10 digits (`memberOf`), so that equal deadlines come in position
 *   order, as on LMDB;
 * - a dead letter, in the `…:x` sorted set by when it died, the same member: those that died
 *   first first, ties in position order (`LeaseTable.deadLetters`); and in the `…:z` sorted set
 *   by position (score and member), so that a page of them after a position is one range read;
 * - the queue's state hash `…:s`: p (putpos), g (getpos), m (maxqueue), u (maxdeliveries, 0 for
 *   none), and counters that spare a scan: x (the last slot taken, new ones are taken after it),
 *   k (leases at slots), y (delayed leases: deliveries 0, not dead). Dead letters are the ZCARD of
 *   `…:x`, held leases what remains of the `…:l` hash. p, g and m are always written together, so
 *   the hash holds p once the queue holds state. And v, the queue's version: every script that
 *   changes the queue adds one to it (`BUMP`), so that an export read in pages can tell that
 *   nothing changed between them. And i, set once the queue's name is in the index for `list`
 *   (redis.ts, `indexed`): until then each script that leaves state in the queue says it is not
 *   (`unindexed`), so that a name whose index entry was lost (its connection or its process went
 *   after the script) goes in with the queue's next write;
 * - a lease a touch moved: `deadline:deliveries:granted`, with the deadline it was granted with;
 * - a lease token: `deliveries-deadline` (`deliveries-granted` once touched), `leaseToken` of
 *   queue/leases.ts.
 *
 * Deadlines and due times are Redis's time (TIME), in ms since the epoch, unless the caller gives
 * one (a test's clock): frontends whose clocks disagree still agree on when a lease ends.
 *
 * Numbers handed to redis.call are formatted first: Redis turns a Lua number into text with too
 * few digits for a dead letter's deadline (DEAD + ms since the epoch).
 */
import { DEAD, FIRST_SLOT, LAST_SLOT, type Lease } from '../queue/leases.js';
import { DEFAULT_MAXQUEUE, MAX_PASSED_OVER } from '../queue/ring.js';

const WIDTH = 10;

/**
 * Adds one to the queue's version (KEYS[1] is its state). A queue that has none yet (new, reset,
 * or written by a version before this one) starts from the server's time in microseconds, not
 * from 1: a queue reset and written to again during an export does not come back to a version the
 * export saw before the reset (that would take more writes than microseconds went by).
 */
const BUMP = `
if redis.call('HINCRBY', KEYS[1], 'v', 1) == 1 then
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'v', t[1] .. string.format('%06d', tonumber(t[2])))
end`;
/** `clock(given)`: the time the caller gave (a number), or else Redis's own, in ms. */
const CLOCK = `
local function clock(given)
  local t = tonumber(given)
  if t then return t end
  t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end`;
/** Lua: the parts of a lease's stored text (deadline, deliveries, granted or ''), as text. */
const LEASE_TEXT = `'^([^:]+):(%d+):?(%d*)$'`;
/** A position as a member of the deadlines' and dead letters' sorted sets. */
export const memberOf = (pos: number): string => String(pos).padStart(WIDTH, '0');
/** A lease as stored in the leases' hash, and back. */
export const leaseValueOf = (l: Lease): string => `${l.deadline}:${l.deliveries}${l.granted === undefined ? '' : `:${l.granted}`}`;
export function parseLeaseValue(v: string): Lease {
  const [deadline, deliveries, granted] = v.split(':').map(Number);
  const l: Lease = { deadline: deadline!, deliveries: deliveries! };
  if (granted !== undefined) l.granted = granted;
  return l;
}

/**
 * What the scripts on a queue's six keys share. KEYS: state, messages, leases, deadlines, dead
 * letters by when they died, dead letters by position. Reads the state into locals; `save()`
 * writes it back when it changed (true then).
 * `setLease(pos, deadline, deliveries)` (deadline nil: the lease ends) keeps the sets and
 * counters in step, as `LeaseTable.set` and `delete` do; `slotFor()` and `bury(…)` are those of
 * leases.ts and plans.ts.
 */
const PRELUDE = `${CLOCK}
local FIRST_SLOT, LAST_SLOT, DEAD = ${FIRST_SLOT}, ${LAST_SLOT}, ${DEAD}
local S, M, L, D, X, Z = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local st = redis.call('HMGET', S, 'p', 'g', 'm', 'x', 'k', 'y', 'u', 'i')
local unindexed = st[8] == false
local p, g, mx = tonumber(st[1]) or 0, tonumber(st[2]) or 0, tonumber(st[3]) or ${DEFAULT_MAXQUEUE}
local lastSlot, slots, delayed, maxdel = tonumber(st[4]) or FIRST_SLOT - 1, tonumber(st[5]) or 0, tonumber(st[6]) or 0, tonumber(st[7]) or 0
local was = {p, g, mx, lastSlot, slots, delayed, maxdel}
local bumped = false
-- Set by the scripts that take or end leases: a ring position's message is deleted once read
-- (\`?read=delete\`), not kept for \`view\` until a put writes over it.
local deleteRead = false
local function changed()
  if bumped then return end
  bumped = true
  ${BUMP}
end
local function fmt(n) return string.format('%d', n) end
local function member(pos) return string.format('%0${WIDTH}d', pos) end
local function parseLease(v)
  local deadline, deliveries, granted = string.match(v, ${LEASE_TEXT})
  return tonumber(deadline), tonumber(deliveries), tonumber(granted)
end
local function count(pos, deadline, deliveries, by)
  if deadline < DEAD and deliveries == 0 then delayed = delayed + by end
  if pos >= FIRST_SLOT then slots = slots + by end
end
local function setLease(pos, deadline, deliveries, granted)
  local m = member(pos)
  local old = redis.call('HGET', L, pos)
  if deadline or old then changed() end
  local wasDead = false
  if old then
    local od, on = parseLease(old)
    wasDead = od >= DEAD
    count(pos, od, on, -1)
  end
  if deadline then
    redis.call('HSET', L, pos, fmt(deadline) .. ':' .. fmt(deliveries) .. (granted and ':' .. fmt(granted) or ''))
    count(pos, deadline, deliveries, 1)
    if deadline >= DEAD then
      if old and not wasDead then redis.call('ZREM', D, m) end
      redis.call('ZADD', X, fmt(deadline - DEAD), m)
      redis.call('ZADD', Z, fmt(pos), m)
    else
      if wasDead then redis.call('ZREM', X, m) redis.call('ZREM', Z, m) end
      redis.call('ZADD', D, fmt(deadline), m)
    end
    if not old and pos > lastSlot then lastSlot = pos end
  elseif old then
    redis.call('HDEL', L, pos)
    if wasDead then redis.call('ZREM', X, m) redis.call('ZREM', Z, m) else redis.call('ZREM', D, m) end
  end
end
local function slotFor()
  if slots >= mx then return 0 end
  local slot = lastSlot
  repeat
    if slot >= LAST_SLOT then slot = FIRST_SLOT else slot = slot + 1 end
  until redis.call('HEXISTS', L, slot) == 0
  lastSlot = slot
  return slot
end
local function bury(pos, message, deliveries, at)
  if pos >= FIRST_SLOT then
    setLease(pos, DEAD + at, deliveries)
    return true
  end
  local slot = slotFor()
  if slot == 0 then return false end
  redis.call('HSET', M, slot, message)
  setLease(slot, DEAD + at, deliveries)
  setLease(pos, nil)
  if deleteRead then redis.call('HDEL', M, pos) end
  return true
end
local function spent(deliveries) return maxdel > 0 and deliveries >= maxdel end
local function save()
  local is = {p, g, mx, lastSlot, slots, delayed, maxdel}
  for i = 1, #is do
    if is[i] ~= was[i] then
      changed()
      redis.call('HSET', S, 'p', fmt(p), 'g', fmt(g), 'm', fmt(mx), 'x', fmt(lastSlot), 'k', fmt(slots), 'y', fmt(delayed), 'u', fmt(maxdel))
      return true
    end
  end
  return false
end
`;

// KEYS: the six. ARGV: channel, origin, now ('': Redis's), delay in ms ('': not delayed), the messages.
// Returns {1 if the queue is not in the index yet else 0, positions (slots when delayed)...}.
export const PUT = `${PRELUDE}
local dueAt = ARGV[4] ~= '' and clock(ARGV[3]) + tonumber(ARGV[4])
local out = {0}
for i = 5, #ARGV do
  if dueAt then
    local slot = slotFor()
    if slot == 0 then break end
    redis.call('HSET', M, slot, ARGV[i])
    setLease(slot, dueAt, 0)
    out[#out + 1] = slot
  else
    local n = p + 1
    if n == g then break end
    if n > mx then
      if g <= 1 then break end
      n = 1
    end
    if redis.call('HEXISTS', L, n) == 1 then break end
    p = n
    redis.call('HSET', M, n, ARGV[i])
    out[#out + 1] = n
  end
end
if #out > 1 then redis.call('PUBLISH', ARGV[1], ARGV[2] .. ':' .. (#out - 1)) end
if save() and unindexed then out[1] = 1 end
return out`;

// KEYS: the six. ARGV: channel, origin, now ('': Redis's), lease ms (0: none), max, byte budget
// (-1: none), '1' to delete read messages. Returns {pos, message, deliveries, token ('' unleased)}
// per message.
export const GET = `${PRELUDE}
local now, leaseMs, max, budget = clock(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
deleteRead = ARGV[7] == '1'
local out = {}
local bytes = 0
local passed = 0
while #out < 4 * max do
  local pos, deliveries
  local due = redis.call('ZRANGEBYSCORE', D, '-inf', fmt(now), 'LIMIT', 0, 1)
  if #due > 0 then
    pos = tonumber(due[1])
    local _, held = parseLease(redis.call('HGET', L, pos))
    deliveries = held + 1
  else
    if g == 0 and p > 0 then pos = 1
    elseif g < p then pos = g + 1
    elseif g > p then
      if g < mx then pos = g + 1 else pos = 1 end
    else break end
    deliveries = 1
  end
  -- A position with no message (an import can leave one) is passed over, its lease dropped.
  local message = redis.call('HGET', M, pos)
  -- Decided before anything changes: a message that does not fit the reply stays where it is.
  if message and #out > 0 and budget >= 0 and bytes + #message > budget then break end
  if #due == 0 then g = pos end
  -- Only a due one holds a lease: an unread position has none to end.
  if not message then
    if #due > 0 then setLease(pos, nil) end
    passed = passed + 1
    if passed >= ${MAX_PASSED_OVER} then break end
  elseif not (spent(deliveries - 1) and bury(pos, message, deliveries - 1, now)) then
    bytes = bytes + #message
    local token = ''
    if leaseMs > 0 then
      local deadline = now + leaseMs
      setLease(pos, deadline, deliveries)
      token = fmt(deliveries) .. '-' .. fmt(deadline)
    else
      if #due > 0 then setLease(pos, nil) end
      -- A slot's message goes with its last lease.
      if pos >= FIRST_SLOT or deleteRead then redis.call('HDEL', M, pos) end
    end
    out[#out + 1] = pos
    out[#out + 1] = message
    out[#out + 1] = deliveries
    out[#out + 1] = token
  end
end
save()
return out`;

// KEYS: the six. ARGV: channel, origin, pos, 'ack'|'nack', token ('' for any), now ('': Redis's),
// '1' to delete read messages. Returns 1 when settled.
export const SETTLE = `${PRELUDE}
local pos = tonumber(ARGV[3])
deleteRead = ARGV[7] == '1'
local l = redis.call('HGET', L, pos)
if not l then return 0 end
local deadline, deliveries = parseLease(l)
-- Only a lease a consumer holds: not a delayed message, a dead letter or a message given back.
if deliveries == 0 or deadline == 0 or deadline >= DEAD then return 0 end
-- The token of the grant, from the stored text (as \`leaseToken\` gives it).
local ds, ns, gs = string.match(l, ${LEASE_TEXT})
if ARGV[5] ~= '' and ARGV[5] ~= ns .. '-' .. (gs ~= '' and gs or ds) then return 0 end
if ARGV[4] == 'ack' then
  setLease(pos, nil)
  if pos >= FIRST_SLOT or deleteRead then redis.call('HDEL', M, pos) end
else
  local message = spent(deliveries) and redis.call('HGET', M, pos)
  if not (message and bury(pos, message, deliveries, clock(ARGV[6]))) then setLease(pos, 0, deliveries) end
  redis.call('PUBLISH', ARGV[1], ARGV[2] .. ':1')
end
save()
return 1`;

// KEYS: state, leases, deadlines. ARGV: pos, token ('' for any), now ('': Redis's), lease ms,
// channel, origin. Returns the grant's token (a touch keeps it), or nil. A lease made shorter: long
// polls on the other frontends look again, and set their alarms for it.
export const TOUCH = `${CLOCK}
local DEAD = ${DEAD}
local l = redis.call('HGET', KEYS[2], ARGV[1])
if not l then return false end
local deadline, deliveries, granted = string.match(l, ${LEASE_TEXT})
if granted == '' then granted = deadline end
-- Only a running lease a consumer holds: not a delayed message, not a dead letter.
if tonumber(deliveries) == 0 or tonumber(deadline) >= DEAD then return false end
local now = clock(ARGV[3])
if tonumber(deadline) <= now then return false end
if ARGV[2] ~= '' and ARGV[2] ~= deliveries .. '-' .. granted then return false end
${BUMP}
local new = string.format('%d', now + tonumber(ARGV[4]))
redis.call('HSET', KEYS[2], ARGV[1], new .. ':' .. deliveries .. ':' .. granted)
redis.call('ZADD', KEYS[3], new, string.format('%0${WIDTH}d', ARGV[1]))
redis.call('PUBLISH', ARGV[5], ARGV[6] .. ':1')
return deliveries .. '-' .. granted`;

// KEYS: the running frontends (a sorted set of ids by when they count as gone). ARGV: this
// frontend's id ('': none), how long it counts as running, in ms. Drops the entries that ran out
// (frontends killed outright), adds or renews this one's; returns how many run. Redis's time:
// a frontend whose clock runs ahead would drop the others' entries early.
export const FRONTENDS = `${CLOCK}
local now = clock('')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
if ARGV[1] ~= '' then
  redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('ZCARD', KEYS[1])`;

// KEYS: deadlines. ARGV: now ('': Redis's). Returns the ms until the first deadline, or nil.
export const EXPIRY = `${CLOCK}
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then return false end
return tonumber(first[2]) - clock(ARGV[1])`;

// KEYS: state. ARGV: the new maxqueue. Returns 0 (refused), 1 (set) or 2 (set, and the queue is not in the index yet).
export const MAXQUEUE = `
local s = redis.call('HMGET', KEYS[1], 'p', 'g', 'm', 'i')
local unindexed = s[4] == false
local p, g, num = tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(ARGV[1])
if num >= p and num >= g and p >= g then
  ${BUMP}
  redis.call('HSET', KEYS[1], 'p', p, 'g', g, 'm', num)
  if unindexed then return 2 end
  return 1
end
return 0`;

// KEYS: the six. ARGV: the new maxdeliveries (0: none). Returns 0 (unchanged), 1 (set) or 2 (set, and the queue is not in the index yet).
export const MAXDELIVERIES = `${PRELUDE}
maxdel = tonumber(ARGV[1])
if not save() then return 0 end
if unindexed then return 2 end
return 1`;

// KEYS: the six. ARGV: channel, origin, max. Returns how many dead letters were made due.
export const REDRIVE = `${PRELUDE}
if tonumber(ARGV[3]) <= 0 then return 0 end
local dead = redis.call('ZRANGE', X, 0, tonumber(ARGV[3]) - 1)
for _, m in ipairs(dead) do setLease(tonumber(m), 0, 0) end
save()
if #dead > 0 then redis.call('PUBLISH', ARGV[1], ARGV[2] .. ':' .. #dead) end
return #dead`;

// KEYS: the six. ARGV: pos. Deletes the dead letter there; returns 1, or 0 when there is none.
export const DISCARD = `${PRELUDE}
local pos = tonumber(ARGV[1])
local l = redis.call('HGET', L, pos)
if not l then return 0 end
local deadline = parseLease(l)
if deadline < DEAD then return 0 end
setLease(pos, nil)
redis.call('HDEL', M, pos)
save()
return 1`;

// KEYS: the six. ARGV: state given ('1' or ''), putpos, getpos, maxqueue, maxdeliveries, then
// the number of messages, that many (pos, message) pairs, then (pos, lease value) pairs.
// Writes them as they are (no queue rule applies), the counters and sets kept in step.
// Returns 1 if the queue is not in the index yet else 0.
export const RESTORE = `${PRELUDE}
if ARGV[1] == '1' then
  p, g, mx, maxdel = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  -- Written even when equal to what is there: the queue holds state from now on.
  was[1] = -1
end
local n = tonumber(ARGV[6])
local i = 7
for _ = 1, n do
  local pos = tonumber(ARGV[i])
  changed()
  redis.call('HSET', M, pos, ARGV[i + 1])
  -- A new slot never overwrites a message restored at one.
  if pos > lastSlot then lastSlot = pos end
  i = i + 2
end
while i < #ARGV do
  local deadline, deliveries, granted = parseLease(ARGV[i + 1])
  setLease(tonumber(ARGV[i]), deadline, deliveries, granted)
  i = i + 2
end
if save() and unindexed then return 1 end
return 0`;

// KEYS: state. The queue's name is in the index now: marked so, unless a reset took its state away.
export const INDEXED = `
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'i', 1) end
return 0`;

// KEYS: state, leases, dead letters. Returns {putpos, getpos, maxqueue, leased, delayed, dead, maxdeliveries}.
export const STATUS = `
local s = redis.call('HMGET', KEYS[1], 'p', 'g', 'm', 'y', 'u')
local delayed, dead = tonumber(s[4]) or 0, redis.call('ZCARD', KEYS[3])
return {tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or ${DEFAULT_MAXQUEUE}, redis.call('HLEN', KEYS[2]) - delayed - dead, delayed, dead, tonumber(s[5]) or 0}`;

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

// KEYS: leases, dead letters by when they died, dead letters by position. ARGV: after, limit.
// Returns {pos, lease value, ...}: the first `limit` dead letters past `after`, in position order.
// A queue whose dead letters were written before the by-position set existed has it built first,
// once, a thousand members at a time: every script adds to the by-position set only with the other
// and removes from the other only with it, so the one is within the other and equal sizes mean
// equal sets. (A frontend of the version before, still running beside this one, can break that:
// a member that is no dead letter any more is dropped here as it is met.)
export const DEAD_PAGE = `
local L, X, Z = KEYS[1], KEYS[2], KEYS[3]
local n = redis.call('ZCARD', X)
if redis.call('ZCARD', Z) ~= n then
  redis.call('DEL', Z)
  for i = 0, n - 1, 1000 do
    local args = {}
    for _, m in ipairs(redis.call('ZRANGE', X, i, i + 999)) do
      args[#args + 1] = string.format('%d', tonumber(m))
      args[#args + 1] = m
    end
    redis.call('ZADD', Z, unpack(args))
  end
end
local out = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', Z, '(' .. ARGV[1], '+inf', 'LIMIT', 0, ARGV[2])) do
  local pos = string.format('%d', tonumber(m))
  local lease = redis.call('HGET', L, pos)
  if lease and tonumber(string.match(lease, '^([^:]+):')) >= ${DEAD} then
    out[#out + 1] = pos
    out[#out + 1] = lease
  else
    redis.call('ZREM', Z, m)
  end
end
return out`;

// KEYS: state, the hash to read a page of (messages or leases), leases, dead letters by when they
// died. ARGV: HSCAN cursor, records, bytes. Returns {version ('' for none yet), next cursor, the
// status as STATUS gives it, {field, value, ...}}: all as they are at one moment. A page ends
// once it holds that many records or bytes: HSCAN is asked for ten at a time, since it answers
// with the values, whatever their size (a COUNT of 1000 gave 1000 messages of up to 32 MiB in one
// reply, which Redis, then the export, held whole).
export const EXPORT_PAGE = `
local s = redis.call('HMGET', KEYS[1], 'p', 'g', 'm', 'y', 'u', 'v')
local delayed, dead = tonumber(s[4]) or 0, redis.call('ZCARD', KEYS[4])
local status = {tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or ${DEFAULT_MAXQUEUE}, redis.call('HLEN', KEYS[3]) - delayed - dead, delayed, dead, tonumber(s[5]) or 0}
local cursor, out, bytes = ARGV[1], {}, 0
repeat
  local page = redis.call('HSCAN', KEYS[2], cursor, 'COUNT', 10)
  cursor = page[1]
  for _, v in ipairs(page[2]) do
    out[#out + 1] = v
    bytes = bytes + #v
  end
until cursor == '0' or #out >= 2 * tonumber(ARGV[2]) or bytes >= tonumber(ARGV[3])
return {s[6] or '', cursor, status, out}`;

// KEYS: state, messages, leases, dead letters by when they died, then where to copy the messages
// and the leases. ARGV: how long the copies live, in ms. Returns the status as STATUS gives it.
export const SNAPSHOT = `
local s = redis.call('HMGET', KEYS[1], 'p', 'g', 'm', 'y', 'u')
local delayed, dead = tonumber(s[4]) or 0, redis.call('ZCARD', KEYS[4])
local status = {tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or ${DEFAULT_MAXQUEUE}, redis.call('HLEN', KEYS[3]) - delayed - dead, delayed, dead, tonumber(s[5]) or 0}
for i = 2, 3 do
  if redis.call('COPY', KEYS[i], KEYS[i + 3], 'REPLACE') == 1 then redis.call('PEXPIRE', KEYS[i + 3], ARGV[1]) end
end
return status`;
