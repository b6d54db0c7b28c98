-- Server-side twin of service.state.merge: merges a batch of messages atomically.
-- Keep the two in step; tests/consistency holds them to the same records.
--
-- KEYS: one hash per message, then the checkpoint hash when ARGV[5] == "1".
-- ARGV: ttl_s, status_table, max_fields, n_messages, has_checkpoint, then per message:
--   header, n_destination, destination..., n_events, then per event:
--     field, blob, message_bits, capped ("1"/"0"), n_recipients, (address, bits)...
-- then, with a checkpoint: n_pairs, (position, value)...
-- Hash fields: h header, f message flags, x truncated, r<address> recipient flags,
-- anything else an event blob.
-- Returns transitions flattened: message_index, event_index (0 = destination),
-- address, from_status (-1 = new recipient), to_status.

local ttl = tonumber(ARGV[1])
local statuses = ARGV[2]
local max_fields = tonumber(ARGV[3])
local n_messages = tonumber(ARGV[4])
local has_checkpoint = ARGV[5] == "1"
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
local a = 6

for m = 1, n_messages do
  local key = KEYS[m]
  local header = ARGV[a]
  a = a + 1
  local current_header = redis.call('HGET', key, 'h')
  if not current_header or bytes_less(current_header, header) then
    redis.call('HSET', key, 'h', header)
  end
  local mf = tonumber(redis.call('HGET', key, 'f') or '0')
  local truncated = redis.call('HEXISTS', key, 'x') == 1
  -- Blobs plus recipients: every field but the bookkeeping ones.
  local size = redis.call('HLEN', key) - 1 - (mf > 0 and 1 or 0) - (truncated and 1 or 0)

  local function add_bits(address, bits, event_index)
    local field = 'r' .. address
    local old = redis.call('HGET', key, field)
    if not old then
      redis.call('HSET', key, field, bits)
      size = size + 1
      out[#out + 1] = m
      out[#out + 1] = event_index
      out[#out + 1] = address
      out[#out + 1] = -1
      out[#out + 1] = status_of(bor(bits, mf))
      return
    end
    old = tonumber(old)
    local new = bor(old, bits)
    if new == old then
      return
    end
    redis.call('HSET', key, field, new)
    local before, after = status_of(bor(old, mf)), status_of(bor(new, mf))
    if before ~= after then
      out[#out + 1] = m
      out[#out + 1] = event_index
      out[#out + 1] = address
      out[#out + 1] = before
      out[#out + 1] = after
    end
  end

  local n_destination = tonumber(ARGV[a])
  a = a + 1
  for d = 1, n_destination do
    add_bits(ARGV[a], 0, 0)
    a = a + 1
  end

  local n_events = tonumber(ARGV[a])
  a = a + 1
  for e = 1, n_events do
    local field, blob = ARGV[a], ARGV[a + 1]
    local message_bits = tonumber(ARGV[a + 2])
    local capped = ARGV[a + 3] == "1"
    local n_recipients = tonumber(ARGV[a + 4])
    a = a + 5
    local current = redis.call('HGET', key, field)
    local apply = false
    if not current then
      apply = true
      if capped and size >= max_fields then
        if not truncated then
          redis.call('HSET', key, 'x', '1')
          truncated = true
        end
      else
        redis.call('HSET', key, field, blob)
        size = size + 1
      end
    elseif bytes_less(blob, current) then
      redis.call('HSET', key, field, blob)
    end
    if apply then
      local merged = bor(mf, message_bits)
      if merged ~= mf then
        local before_mf = mf
        mf = merged
        redis.call('HSET', key, 'f', mf)
        local all = redis.call('HGETALL', key)
        for i = 1, #all, 2 do
          local name = all[i]
          if string.byte(name, 1) == 114 then -- 'r'
            local flags = tonumber(all[i + 1])
            local before, after = status_of(bor(flags, before_mf)), status_of(bor(flags, mf))
            if before ~= after then
              out[#out + 1] = m
              out[#out + 1] = e
              out[#out + 1] = string.sub(name, 2)
              out[#out + 1] = before
              out[#out + 1] = after
            end
          end
        end
      end
      for r = 1, n_recipients do
        add_bits(ARGV[a], tonumber(ARGV[a + 1]), e)
        a = a + 2
      end
    else
      a = a + 2 * n_recipients
    end
  end
  redis.call('EXPIRE', key, ttl)
end

if has_checkpoint then
  local checkpoint_key = KEYS[n_messages + 1]
  local n_pairs = tonumber(ARGV[a])
  a = a + 1
  for p = 1, n_pairs do
    redis.call('HSET', checkpoint_key, ARGV[a], ARGV[a + 1])
    a = a + 2
  end
end

return out
