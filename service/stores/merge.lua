-- Server-side twin of service.state.merge: merges a batch of messages atomically.
-- Keep the two in step; the consistency tests hold them to the same records.
--
-- A message is one string key holding msgpack [header, message_flags, truncated,
-- {address = flags}, {field = blob}]: one compact value, whatever Redis's
-- hash-max-listpack-* settings, read and written once per message per batch.
--
-- KEYS: one per message, then the checkpoint hash when there is a checkpoint, then
-- the statistics bucket hash when there are statistics, then the transitions stream
-- when there is a feed.
-- ARGV: ttl_s, status_table, max_fields, batch, checkpoint, stats, feed; all but the
-- first three are msgpack (one argument each, so the client does not pack thousands):
--   batch = [[header, [destination...], [[field, blob, message_bits, capped,
--             [[address, bits]...], natural, latency_field, [once_field...], at]...],
--             message_id, sent_at]...], one entry per message key, in KEYS order;
--   checkpoint = {position = value}, or an empty string for none;
--   stats = [bucket_ttl_s, [status names...]], or an empty string for none;
--   feed = [min_id_ms], or an empty string for none: the batch's transitions are
--          appended to the stream as one entry (field "t", msgpack [[message_id,
--          address, from, to, at, latency_ms]...]), so every replica can follow them;
--          entries older than min_id_ms are trimmed (a window of time, because an
--          entry holds a whole batch: a count of entries would not bound memory).
-- What changed is counted as service.stats describes, summed per field in the
-- script and written with one HINCRBY per field.
-- Returns msgpack of the transitions, flattened: message_index, event_index
-- (0 = destination), address, from_status (-1 = new recipient), to_status.

local ttl = tonumber(ARGV[1])
local statuses = ARGV[2]
local max_fields = tonumber(ARGV[3])
local batch = cmsgpack.unpack(ARGV[4])
local checkpoint = ARGV[5] ~= '' and cmsgpack.unpack(ARGV[5]) or nil
local stats = ARGV[6] ~= '' and cmsgpack.unpack(ARGV[6]) or nil
local feed = ARGV[7] ~= '' and cmsgpack.unpack(ARGV[7]) or nil
local fed = {}
local status_names = stats and stats[2] or {}
local counts = {}
local bor = bit.bor

local function status_of(flags)
  return string.byte(statuses, flags + 1) - 48
end

-- Byte order, as Python compares bytes. Lua's `<` on strings goes through strcoll,
-- and Redis sets LC_COLLATE from its environment, so `<` would depend on the locale.
local function bytes_less(x, y)
  if x == y then
    return false
  end
  local n = math.min(#x, #y)
  for i = 1, n do
    local cx, cy = string.byte(x, i), string.byte(y, i)
    if cx ~= cy then
      return cx < cy
    end
  end
  return #x < #y
end

local out = {}

local function bump(field)
  counts[field] = (counts[field] or 0) + 1
end

-- Twin of service.stats.transition_fields.
local function count_transition(address, from_status, to_status, natural, latency_field)
  local domain = string.match(address, "@([^@]*)$")
  if domain == nil or domain == "" then
    domain = "(none)"
  end
  local prefix = "d:" .. domain .. "|"
  if from_status == -1 then
    bump("c:sent")
    bump(prefix .. "c:sent")
  end
  if from_status ~= -1 or to_status ~= 0 then
    local name = "c:" .. status_names[to_status + 1]
    bump(name)
    bump(prefix .. name)
  end
  if latency_field ~= "" and to_status == natural then
    bump(latency_field)
    bump(prefix .. latency_field)
  end
end

local function transition(message_index, event, event_index, address, from_status, to_status)
  out[#out + 1] = message_index
  out[#out + 1] = event_index
  out[#out + 1] = address
  out[#out + 1] = from_status
  out[#out + 1] = to_status
  if feed then
    local message = batch[message_index]
    local at = event and event[9] or (message[3][1] and message[3][1][9] or message[5])
    fed[#fed + 1] = {message[4], address, from_status, to_status, at, math.max(0, at - message[5])}
  end
  if stats then
    if event then
      count_transition(address, from_status, to_status, event[6], event[7])
    else
      count_transition(address, from_status, to_status, -1, "")
    end
  end
end

for m = 1, #batch do
  local key = KEYS[m]
  local message = batch[m]
  local raw = redis.call('GET', key)
  local header, mf, truncated, recipients, blobs = '', 0, false, {}, {}
  local size = 0
  if raw then
    local record = cmsgpack.unpack(raw)
    header, mf, truncated, recipients, blobs = record[1], record[2], record[3], record[4], record[5]
    for _ in pairs(recipients) do
      size = size + 1
    end
    for _ in pairs(blobs) do
      size = size + 1
    end
  end
  local changed = false

  local incoming_header = message[1]
  if bytes_less(header, incoming_header) then
    header = incoming_header
    changed = true
  end

  local function add_bits(address, bits, event, event_index)
    local old = recipients[address]
    if old == nil then
      recipients[address] = bits
      size = size + 1
      changed = true
      transition(m, event, event_index, address, -1, status_of(bor(bits, mf)))
      return
    end
    local new = bor(old, bits)
    if new == old then
      return
    end
    recipients[address] = new
    changed = true
    local before, after = status_of(bor(old, mf)), status_of(bor(new, mf))
    if before ~= after then
      transition(m, event, event_index, address, before, after)
    end
  end

  for _, address in ipairs(message[2]) do
    add_bits(address, 0, nil, 0)
  end

  local events = message[3]
  for e = 1, #events do
    local event = events[e]
    local field, blob, message_bits, capped = event[1], event[2], event[3], event[4]
    local current = blobs[field]
    local apply = false
    if current == nil then
      apply = true
      if capped and size >= max_fields then
        if not truncated then
          truncated = true
          changed = true
        end
      else
        blobs[field] = blob
        size = size + 1
        changed = true
      end
    elseif bytes_less(blob, current) then
      blobs[field] = blob
      changed = true
    end
    if apply then
      if stats then
        for _, once in ipairs(event[8]) do
          bump(once)
        end
      end
      local merged = bor(mf, message_bits)
      if merged ~= mf then
        local before_mf = mf
        mf = merged
        changed = true
        for address, flags in pairs(recipients) do
          local before, after = status_of(bor(flags, before_mf)), status_of(bor(flags, mf))
          if before ~= after then
            transition(m, event, e, address, before, after)
          end
        end
      end
      for _, pair in ipairs(event[5]) do
        add_bits(pair[1], pair[2], event, e)
      end
    end
  end

  if changed then
    redis.call('SET', key, cmsgpack.pack({header, mf, truncated, recipients, blobs}), 'EX', ttl)
  else
    redis.call('EXPIRE', key, ttl)
  end
end

local next_key = #batch + 1

if checkpoint then
  local checkpoint_key = KEYS[next_key]
  next_key = next_key + 1
  for position, value in pairs(checkpoint) do
    redis.call('HSET', checkpoint_key, position, value)
  end
end

if stats then
  local stats_key = KEYS[next_key]
  next_key = next_key + 1
  local any = false
  for field, n in pairs(counts) do
    redis.call('HINCRBY', stats_key, field, n)
    any = true
  end
  if any then
    redis.call('EXPIRE', stats_key, stats[1])
  end
end

if feed and #fed > 0 then
  redis.call('XADD', KEYS[next_key], 'MINID', '~', feed[1], '*', 't', cmsgpack.pack(fed))
end

return cmsgpack.pack(out)
