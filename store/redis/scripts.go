package redis

import goredis "github.com/redis/go-redis/v9"

// The scripts carry a "#!lua" shebang (Redis 7.0 and later): Redis then
// refuses a writing script under maxmemory pressure before it runs, instead
// of failing midway through a batch, which keeps Apply all or nothing. Each
// script names every key it touches in KEYS, and all of them share one hash
// tag, so they run unchanged on Redis Cluster.
//
// Fencing, shared by applyScript and clearScript: ARGV[1] is the lease value
// this handle holds on the key ("<holder>:<token>") or "" when it holds
// none, and ARGV[2] is this handle's holder prefix ("<holder>:"). A handle
// holding a lease writes only while the stored lease is exactly its own; a
// handle holding none writes only while no other holder has one. A refusal
// returns {0, stored lease value}; success returns {1, ""}.
const fenceCheck = `
local lease = redis.call('GET', KEYS[4])
if ARGV[1] ~= '' then
  if lease ~= ARGV[1] then return {0, lease or ''} end
elseif lease and string.sub(lease, 1, #ARGV[2]) ~= ARGV[2] then
  return {0, lease}
end
`

// The batch fence, shared by applyScript and clearScript, keeps the batches
// of ApplyAsync in order when two are on their way at once. KEYS[5] holds
// the id of the last batch written to the session; ARGV[3] is the id this
// batch must follow, or "*" to follow any (Apply and Clear), and ARGV[4]
// this batch's own id, which the script stores once it has written. A
// batch whose predecessor is not the last one written writes nothing and
// returns {2, id of the last one}; one whose own id is the last written
// already ran (a command go-redis sent again after a lost reply) and
// returns {1, ""} again.
const batchCheck = `
if ARGV[3] ~= '*' then
  local cur = redis.call('GET', KEYS[5]) or ''
  if cur == ARGV[4] then return {1, ''} end
  if cur ~= ARGV[3] then return {2, cur} end
end
`

// applyScript applies one batch. KEYS: rec, idx, meta, lease, batch. ARGV
// after the fencing pair and the batch ids: server, client id, then (kind,
// seq field, value)
// triples with kind "p" (put) or "d" (delete). Each field ends as the last
// operation on it left it, so the script applies only that one, and a kind
// at a time: one HSET, ZADD, HDEL and ZREM (per 1,000 arguments) instead of two
// calls per operation, which made a batch of 60 cost about twice as much
// Redis time. The meta hash exists while
// the session holds records: it names the session for Sessions, and its
// gen (creation time) and ver (batch count) let a paged Load detect that a
// batch landed between two of its pages.
var applyScript = goredis.NewScript(`#!lua
` + fenceCheck + batchCheck + `
local last = {}
for i = 7, #ARGV, 3 do last[ARGV[i+1]] = i end
local hset, zadd, del = {}, {}, {}
for i = 7, #ARGV, 3 do
  local f = ARGV[i+1]
  if last[f] == i then
    if ARGV[i] == 'p' then
      hset[#hset+1] = f; hset[#hset+1] = ARGV[i+2]
      zadd[#zadd+1] = 0; zadd[#zadd+1] = f
    else
      del[#del+1] = f
    end
  end
end
local function each(cmd, key, args)
  for i = 1, #args, 1000 do
    redis.call(cmd, key, unpack(args, i, math.min(i+999, #args)))
  end
end
each('HSET', KEYS[1], hset)
each('ZADD', KEYS[2], zadd)
each('HDEL', KEYS[1], del)
each('ZREM', KEYS[2], del)
if redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
else
  if redis.call('EXISTS', KEYS[3]) == 0 then
    local t = redis.call('TIME')
    redis.call('HSET', KEYS[3], 'server', ARGV[5], 'client', ARGV[6],
      'gen', t[1] .. '.' .. t[2], 'ver', 0)
  end
  redis.call('HINCRBY', KEYS[3], 'ver', 1)
end
redis.call('SET', KEYS[5], ARGV[4])
return {1, ''}
`)

// clearScript drops a session's records, keeping its fence counter so that
// tokens keep growing, and its batch id, so that a batch of ApplyAsync that
// lands late finds it changed. KEYS: rec, idx, meta, lease, batch. ARGV:
// the fencing pair and the batch ids.
var clearScript = goredis.NewScript(`#!lua
` + fenceCheck + batchCheck + `
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('SET', KEYS[5], ARGV[4])
return {1, ''}
`)

// loadScript reads one page of a session in seq order, for Load and Scan.
// KEYS: rec, idx, meta. ARGV: the ZRANGEBYLEX start ("-", or "(" or "["
// followed by a seq field), the most records to return (0: all), and a byte
// budget after which the page stops early (0: none; a page always holds at
// least one record). It returns gen, ver, the first index member after the
// page (nil when the page ends the index), then (seq field, value) pairs; a
// value missing from the hash comes back nil.
//
// The index is read in chunks, so that a page cut short by its budget does
// not pay for index members it never reaches. With a budget, values are
// read one HGET at a time, checking the budget before each, since nothing
// cheaper tells a value's size before it is read (a record may be 16 MiB).
// Without one, a chunk's values come in one HMGET, which spares a call per
// record: the unbounded read Load falls back to (one script for the whole
// session) holds Redis up 10 to 30% less.
var loadScript = goredis.NewScript(`#!lua flags=no-writes
local chunk = 256
local head = redis.call('HMGET', KEYS[3], 'gen', 'ver')
local n = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local out = {head[1], head[2], false}
local start, taken, bytes = ARGV[1], 0, 0
while true do
  local want = chunk
  if n > 0 then want = math.min(chunk, n - taken + 1) end
  local members = redis.call('ZRANGEBYLEX', KEYS[2], start, '+', 'LIMIT', 0, want)
  local k = #members
  if n > 0 then k = math.min(k, n - taken) end
  local vals
  if budget == 0 and k > 0 then
    vals = redis.call('HMGET', KEYS[1], unpack(members, 1, k))
  end
  for i, m in ipairs(members) do
    if i > k or (budget > 0 and bytes >= budget) then
      out[3] = m
      return out
    end
    local v
    if vals then v = vals[i] else v = redis.call('HGET', KEYS[1], m) end
    out[#out + 1] = m
    out[#out + 1] = v
    if v then bytes = bytes + #v end
  end
  taken = taken + k
  if #members < want then return out end
  start = '(' .. members[#members]
end
`)

// acquireScript takes a free lease. KEYS: lease, fence. ARGV: holder
// prefix, TTL in milliseconds. A lease already held under this handle's
// holder prefix counts as free: the handle holds no lease on the key (the
// caller checked), so it is the remains of an acquisition whose reply was
// lost or of a release that did not reach Redis. Every acquisition takes a
// new token from the fence counter. Returns {1, token} or
// {0, remaining TTL in ms, holder's lease value}.
var acquireScript = goredis.NewScript(`#!lua
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[1]) ~= ARGV[1] then
  return {0, redis.call('PTTL', KEYS[1]), cur}
end
local t = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. t, 'PX', ARGV[2])
return {1, t}
`)

// renewScript extends a lease that is still exactly ours. KEYS: lease.
// ARGV: lease value, TTL in milliseconds. Returns 1, or 0 once the lease
// expired or another holder took it.
var renewScript = goredis.NewScript(`#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`)

// releaseScript deletes a lease that is still exactly ours. KEYS: lease.
// ARGV: lease value.
var releaseScript = goredis.NewScript(`#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`)
