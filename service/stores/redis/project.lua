-- The statistics projection's atomic step (service.stores.projection): applies what a
-- run of change log entries counted (service.stores.changelog), with the
-- projection's checkpoint, so a run applied twice counts once.
--
-- KEYS: the projection's checkpoint (a string: the last log entry applied), the
-- statistics revisions hash, the change log stream, then every key a target names
-- (by its position in KEYS: on a Redis Cluster the call is routed by KEYS, and every
-- key shares the slot group's prefix).
-- ARGV: the checkpoint this run starts from ('' for none), the last entry it
-- applies, the smallest id to keep in the log ('' keeps it all: a run keeps its
-- checkpoint's own entry, whose absence tells a later run it fell behind), and the plan,
-- msgpack as service.stores.layout names it (PLAN, LIVE, ROLLUP):
--   admissions = where groups are admitted: the hash an hour's live buckets share,
--          or a rollup's own; its TTL, its cap, and the groups its targets count,
--          in the order they were first counted;
--   live = one target per live bucket: its overall counters {field = n}, its groups
--          [[group, {tail = n}]...], the key of each of its dimensions' hashes
--          {dimension = key position}, its admission's key, its TTL;
--   rollups = one target per hourly or daily rollup (its own admission): its
--          overall counters, its groups, and the key listing the step's periods,
--          with the score below which listed periods have expired;
--   now_bucket, bucket_ttl_s: the live bucket of the wall clock, and how long the
--          revisions of a bucket are kept.
-- Groups are admitted here (twin of service.stats.admit): a target's admission
-- counts at most `cap` values of a dimension apart, first come, against what is
-- stored; the rest count as <dimension>=(other).
-- A target whose writes fail (a key of the wrong type) is passed over and named in
-- the reply: counted as lost, it must not stop the projection.
-- Returns msgpack [applied (1, or 0 when the checkpoint moved: another replica
-- applied the run), [error...]].

local checkpoint_key, revisions_key, log_key = KEYS[1], KEYS[2], KEYS[3]
if (redis.call('GET', checkpoint_key) or '') ~= ARGV[1] then
  return cmsgpack.pack({0, {}})
end
local plan = cmsgpack.unpack(ARGV[4])
local failed = {}

local function add(counted, field, n)
  counted[field] = (counted[field] or 0) + n
end

local function flush(key, counted, ttl)
  for field, n in pairs(counted) do
    redis.call('HINCRBY', key, field, n)
  end
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  end
end

-- Admissions read once a call, written once at its end: key -> {key, ttl, cap,
-- known = {group = counted as}, admitted = {dimension = n}, counted = {a:, n: fields}}.
local admissions = {}

local function admission(position)
  return admissions[KEYS[position]]
end

local function dimension_of(group)
  return string.match(group, '^([^=]*)=') or group
end

local function admit(a, group)
  local known = a.known[group]
  if known then
    return known
  end
  local dimension = dimension_of(group)
  if redis.call('HEXISTS', a.key, 'a:' .. group) == 1 then
    known = group
  else
    local admitted = a.admitted[dimension]
    if admitted == nil then
      admitted = tonumber(redis.call('HGET', a.key, 'n:' .. dimension) or '0')
    end
    if admitted >= a.cap then
      known = dimension .. OTHER_SUFFIX
    else
      admitted = admitted + 1
      add(a.counted, 'a:' .. group, 1)
      add(a.counted, 'n:' .. dimension, 1)
      known = group
    end
    a.admitted[dimension] = admitted
  end
  a.known[group] = known
  return known
end

local function apply_live(t)
  local key = KEYS[t[LIVE_KEY]]
  local a = admission(t[LIVE_ADMISSION_KEY])
  local by_dimension = {} -- key position -> counted
  local marks = {}
  for _, entry in ipairs(t[LIVE_GROUPS]) do
    local known = admit(a, entry[COUNTED_GROUP_GROUP])
    local dimension = dimension_of(known)
    local position = t[LIVE_DIMENSION_KEYS][dimension]
    local counted = by_dimension[position]
    if counted == nil then
      counted = {}
      by_dimension[position] = counted
      marks['d:' .. dimension] = true
    end
    local prefix = 'g:' .. known .. '|'
    for tail, n in pairs(entry[COUNTED_GROUP_TAILS]) do
      add(counted, prefix .. tail, n)
    end
  end
  flush(key, t[LIVE_OVERALL], 0)
  for field in pairs(marks) do
    redis.call('HSET', key, field, 1)
  end
  redis.call('EXPIRE', key, t[LIVE_TTL_S])
  for position, counted in pairs(by_dimension) do
    flush(KEYS[position], counted, t[LIVE_TTL_S])
  end
end

local trimmed_indexes = {}

local function apply_rollup(t)
  local key = KEYS[t[ROLLUP_KEY]]
  local a = admission(t[ROLLUP_KEY])
  local counted = {}
  for field, n in pairs(t[ROLLUP_OVERALL]) do
    counted[field] = n
  end
  for _, entry in ipairs(t[ROLLUP_GROUPS]) do
    local prefix = 'g:' .. admit(a, entry[COUNTED_GROUP_GROUP]) .. '|'
    for tail, n in pairs(entry[COUNTED_GROUP_TAILS]) do
      add(counted, prefix .. tail, n)
    end
  end
  flush(key, counted, t[ROLLUP_TTL_S])
  -- The overall figures again, alone (service.history.FIGURE_HEADS), so that a
  -- reader of them need not read the groups.
  flush(KEYS[t[ROLLUP_OVERALL_KEY]], t[ROLLUP_OVERALL], t[ROLLUP_TTL_S])
  -- Listed in its step's index, so that history reads only periods that exist.
  local index_key = KEYS[t[ROLLUP_INDEX_KEY]]
  redis.call('ZADD', index_key, t[ROLLUP_START], t[ROLLUP_START])
  if not trimmed_indexes[index_key] then
    -- Entries of rollups past their keep (expired by their TTL) leave the index.
    trimmed_indexes[index_key] = true
    redis.call('ZREMRANGEBYSCORE', index_key, '-inf', '(' .. t[ROLLUP_EXPIRED_BEFORE])
  end
end

-- Every admission's groups first, in the order they were first counted (across
-- the targets that share it), as the merge's own counting met them.
for _, entry in ipairs(plan[PLAN_ADMISSIONS]) do
  local key = KEYS[entry[ADMISSION_KEY]]
  local a = {key = key, ttl = entry[ADMISSION_TTL_S], cap = entry[ADMISSION_CAP], known = {},
             admitted = {}, counted = {}}
  admissions[key] = a
  local ok, err = pcall(function()
    for _, group in ipairs(entry[ADMISSION_ORDER]) do
      admit(a, group)
    end
  end)
  if not ok then
    failed[#failed + 1] = tostring(err)
  end
end

local live_touched = {}
for _, t in ipairs(plan[PLAN_LIVE]) do
  local ok, err = pcall(apply_live, t)
  if ok then
    live_touched[#live_touched + 1] = t[LIVE_BUCKET]
  else
    failed[#failed + 1] = tostring(err)
  end
end
for _, t in ipairs(plan[PLAN_ROLLUPS]) do
  local ok, err = pcall(apply_rollup, t)
  if not ok then
    failed[#failed + 1] = tostring(err)
  end
end
for _, a in pairs(admissions) do
  local ok, err = pcall(flush, a.key, a.counted, a.ttl)
  if not ok then
    failed[#failed + 1] = tostring(err)
  end
end

-- Revisions (service.stats.Revisions): "seq" once per call that counted anything
-- live, each touched bucket's field set to it; fields of buckets past the TTL go.
if #live_touched > 0 then
  local ok, err = pcall(function()
    local sequence = redis.call('HINCRBY', revisions_key, 'seq', 1)
    local new_bucket = false
    for _, bucket in ipairs(live_touched) do
      if redis.call('HSET', revisions_key, bucket, sequence) == 1 then
        new_bucket = true
      end
    end
    if new_bucket then
      local oldest = plan[PLAN_NOW_BUCKET] - plan[PLAN_BUCKET_TTL_S]
      for _, field in ipairs(redis.call('HKEYS', revisions_key)) do
        local bucket = tonumber(field)
        if bucket and bucket < oldest then
          redis.call('HDEL', revisions_key, field)
        end
      end
    end
    redis.call('EXPIRE', revisions_key, plan[PLAN_BUCKET_TTL_S])
  end)
  if not ok then
    failed[#failed + 1] = tostring(err)
  end
end

redis.call('SET', checkpoint_key, ARGV[2])
if ARGV[3] ~= '' then
  redis.call('XTRIM', log_key, 'MINID', ARGV[3])
end
return cmsgpack.pack({1, failed})
