-- Server-side twin of service.state.merge: merges a batch of messages atomically.
-- Keep the two in step; the consistency tests hold them to the same records.
--
-- A message is one string key holding msgpack [header, message_flags, truncated,
-- {address = flags}, {field = blob}]: one compact value, whatever Redis's
-- hash-max-listpack-* settings, read and written once per message per batch.
--
-- KEYS: one per message, then one for each of the parts checkpoint, log, feed,
-- forward and erasures that is sent, in that order (layout.OPTIONAL_KEYS; the
-- script finds each by name): the checkpoint hash, the change log stream, the
-- transitions stream, the forwarding outbox and the group's tombstone revision; then, with slot groups (ARGV[declared] = '1'), in any
-- order, every other key the call may touch (declared by service.stores.redis:
-- index and suppression keys of the batch's messages, and the probe keys of
-- ARGV[trim]). The script then names no key outside KEYS (`given`), so on a Redis
-- Cluster every key of a call is routed with it; all share the call's slot group
-- prefix (service.stores.slots).
-- ARGV, and every array below, are laid out as service.stores.layout names them;
-- the script is loaded behind a prelude generated from it (ARG_BATCH, EVENT_AT,
-- STATUS_DELAYED ...), so no position or status code is written here as a number.
--   batch = [[MessageWrite, handle]...], one entry per message key, in KEYS order
--           (the key is <prefix>m:{handle}; the record keeps the message id). A
--           MessageWrite holds its EventWrites; both are service.state's tuples;
--   checkpoint = {position = value}, or an empty string for none;
--   log = [min_id_ms], or an empty string for none; log_context = bytes: when
--           there is a log, each call that changed anything appends one entry to
--           the change log stream: field "c" the context as Python packed it
--           (service.stores.changelog: the counting settings and the statistics
--           facts of the call's events), "t" the transitions as the reply holds
--           them but with the recipient's domain for its address, "a" the events
--           new to the store (message_index, event_index, flattened). Entries older
--           than min_id_ms are trimmed. The projections (statistics) apply the log
--           after the merge, each under its own checkpoint: nothing derived is
--           counted here.
--   suppress = [keep_s, now_ms], or an empty string for none: a recipient newly
--          holding a Permanent bounce or a complaint is recorded at
--          <prefix>sup:<address> (msgpack layout.SUPPRESSION; the earliest reason
--          kept), expiring keep_s after the event, and listed in the zset
--          <prefix>sup-index scored by the event's time (service.suppressions).
--   forward = [min_id_ms], or an empty string for none: the batch's transitions are
--          appended to the forwarding outbox stream (KEYS, after the feed's) as one
--          entry (field "t", msgpack [[message_id, address, from, to, at, latency_ms,
--          header, cause event blob or '', provider]...], layout.FORWARDED), in the
--          same atomic call that makes them, for service.forward to deliver;
--          entries older than min_id_ms are trimmed.
--   feed = [min_id_ms], or an empty string for none: the batch's transitions are
--          appended to the stream as one entry (field "t", msgpack [[message_id,
--          address, from, to, at, latency_ms]...]), so every replica can follow them;
--          entries older than min_id_ms are trimmed (a window of time, because an
--          entry holds a whole batch: a count of entries would not bound memory).
--   index = [prefix, bucket_ms, [status names...], oldest_live_ms]: the search
--          indexes that (in a replay, hold_s > 0: a message sent before
--          oldest_live_ms, past the retention, is not indexed, and its record
--          expires hold_s after the merge)
--          service.stores.redis_search reads, all scored by send time with the
--          message handle as member:
--            <prefix>r:<recipient>  zset, the recipient's messages (addresses come
--                                   case-folded from the parser);
--            <prefix>x:pending  zset, messages with a recipient still sent/delayed;
--            <prefix>x:s:<status>  zset per problem status (bounced and above),
--                                  the message's status;
--            <prefix>t:<bucket>  string, every message sent in the bucket, as
--                                appended 6-byte send times + 16-byte handles;
--            <prefix>x:buckets  zset of the buckets that hold messages.
--          Entries that may be dead (sent before oldest_live_ms, at the oldest end
--          of a zset; the oldest send-time bucket) are returned as trim candidates.
--   trim = [index key, member, probe key, ...] (the last call's candidates), or an
--          empty string: an entry whose probe key (its record, or bucket string)
--          no longer exists is removed from its index.
--   erasures = the group's tombstone revision the writes were stripped against
--          (service.tombstones), or an empty string: when the stored one differs,
--          the script writes nothing and returns msgpack ['stale-erasures'].
-- Read it as state.merge: the arguments (read-only) and the keys after the records
-- first; then one function per concern (the record, its recipients' bits, its
-- events, its indexes, suppressions, the streams), each given the call's outputs
-- (`call`, made once below) rather than reaching for script-wide tables.
-- Returns msgpack [transitions, candidates, refused]: the transitions flattened
-- (message_index, event_index (0 = destination), address, from_status (-1 = new
-- recipient), to_status), and the trim candidates flattened as ARGV[trim] takes them.

-- The arguments, read-only from here on.
local ttl = tonumber(ARGV[ARG_TTL_S])
local hold = tonumber(ARGV[ARG_HOLD_S])
local statuses = ARGV[ARG_STATUS_TABLE]
local max_fields = tonumber(ARGV[ARG_MAX_FIELDS])
local batch = cmsgpack.unpack(ARGV[ARG_BATCH])
local checkpoint = ARGV[ARG_CHECKPOINT] ~= '' and cmsgpack.unpack(ARGV[ARG_CHECKPOINT]) or nil
local log = ARGV[ARG_LOG] ~= '' and cmsgpack.unpack(ARGV[ARG_LOG]) or nil
local feed = ARGV[ARG_FEED] ~= '' and cmsgpack.unpack(ARGV[ARG_FEED]) or nil
local forward = ARGV[ARG_FORWARD] ~= '' and cmsgpack.unpack(ARGV[ARG_FORWARD]) or nil
local suppress = ARGV[ARG_SUPPRESS] ~= '' and cmsgpack.unpack(ARGV[ARG_SUPPRESS]) or nil
local index = ARGV[ARG_INDEX] ~= '' and cmsgpack.unpack(ARGV[ARG_INDEX]) or nil
local trim = ARGV[ARG_TRIM] ~= '' and cmsgpack.unpack(ARGV[ARG_TRIM]) or nil
-- Caps (service.state.MAX_RECIPIENTS, MAX_RECORD_BLOB_BYTES): enforced here, inside
-- the atomic merge, so no writer can grow one record past them.
local max_recipients = tonumber(ARGV[ARG_MAX_RECIPIENTS])
local max_blob_bytes = tonumber(ARGV[ARG_MAX_BLOB_BYTES])
-- The tombstones (service.tombstones) the writes were stripped against, by their
-- revision in this group, or nil when not sent.
local erasures = ARGV[ARG_ERASURES] ~= '' and ARGV[ARG_ERASURES] or nil
local watched = ARGV[ARG_WATCHED] ~= '' or nil
local index_prefix = index and index[INDEX_PREFIX]
local oldest_live = index and index[INDEX_OLDEST_LIVE_MS]
local bor, band, bnot = bit.bor, bit.band, bit.bnot

-- The keys after the records, by name (layout.OPTIONAL_KEYS): each part sent has
-- its key, in that order.
local key_of = {}
do
  local sent = {}
  sent[OPTIONAL_KEY_CHECKPOINT] = checkpoint
  sent[OPTIONAL_KEY_LOG] = log
  sent[OPTIONAL_KEY_FEED] = feed
  sent[OPTIONAL_KEY_FORWARD] = forward
  sent[OPTIONAL_KEY_ERASURES] = erasures
  sent[OPTIONAL_KEY_WATCHED] = watched
  local next_key = #batch + 1
  for part = 1, OPTIONAL_KEYS do
    if sent[part] then
      key_of[part] = KEYS[next_key]
      next_key = next_key + 1
    end
  end
end

-- With slot groups (a Redis Cluster, ARGV[declared] set), every key this script
-- touches is in KEYS (the cluster routes by KEYS, and a script must name no other):
-- the fixed ones by position, the rest (index, bucket and suppression keys of this
-- call's messages, trim probes) declared after them. A key built here and not
-- declared is a bug in the Python side's list: refused loudly. One Redis needs no
-- declaration, and is spared building and checking it.
-- The live stream is kept for the processes that have a live page open: with a
-- watchers' flag given and none set (service.live_demand), nobody reads it, and
-- the call neither builds its entries nor appends them.
if feed and watched and redis.call('EXISTS', key_of[OPTIONAL_KEY_WATCHED]) == 0 then
  feed = nil
end

local given = function(name)
  return name
end
if ARGV[ARG_DECLARED] ~= '' then
  local declared = {}
  for i = 1, #KEYS do
    declared[KEYS[i]] = true
  end
  given = function(name)
    if not declared[name] then
      error('merge.lua: key not in KEYS: ' .. name)
    end
    return name
  end
end

-- Pure helpers --------------------------------------------------------------

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

-- An address's domain, NO_DOMAIN without one (twin of service.dimensions.domain_of):
-- what forwarded changes name a provider by, and the change log names.
local function domain_of(address)
  local domain = string.match(address, '@([^@]*)$')
  if domain == nil or domain == '' then
    return NO_DOMAIN
  end
  return domain
end

local function send_time_bytes(ms)
  local b = {}
  for i = 6, 1, -1 do
    b[i] = ms % 256
    ms = (ms - b[i]) / 256
  end
  return string.char(b[1], b[2], b[3], b[4], b[5], b[6])
end

-- The message's status (highest of its recipients') and whether it has a recipient
-- still waiting, or is itself sent/delayed; twin of MessageRecord.status and
-- service.search.is_pending.
local function rollup(recipients, mf)
  local top, pending = nil, false
  for _, flags in pairs(recipients) do
    local code = status_of(bor(flags, mf))
    if top == nil or code > top then
      top = code
    end
    if code <= STATUS_DELAYED then
      pending = true
    end
  end
  if top == nil then
    top = status_of(mf)
  end
  return top, pending or top <= STATUS_DELAYED
end

-- What a call produces ---------------------------------------------------------

-- Everything a call accumulates, made once per call and handed to each function
-- that adds to it (nothing else outlives a function):
--   out        the reply's transitions, flattened in REPLY order;
--   fed        the live stream's entries (FED order), when kept;
--   forwarded  the forwarding outbox's entries (FORWARDED order), when kept;
--   applied    message_index, event_index of each event new to the store (APPLIED);
--   candidates index entries that may be dead: index key, member, probe key;
--   tended     shared index keys already looked after in this call.
local function new_call()
  return {out = {}, fed = {}, forwarded = {}, applied = {}, candidates = {}, tended = {}}
end

-- A recipient's status changed: in the reply, and in the live stream and the
-- forwarding outbox when they are kept. `header` is the message's, as merged.
local function transition(call, message_index, header, event, event_index, address, from_status,
                          to_status)
  local out = call.out
  -- In REPLY order.
  out[#out + 1] = message_index
  out[#out + 1] = event_index
  out[#out + 1] = address
  out[#out + 1] = from_status
  out[#out + 1] = to_status
  local message = batch[message_index][ENTRY_WRITE]
  -- Changes no single event made (new destination recipients) happen at, and
  -- count in, the batch's first event.
  local cause = event or message[MESSAGE_EVENTS][1]
  local at = cause and cause[EVENT_AT] or message[MESSAGE_SENT_AT]
  local latency = NO_LATENCY
  if message[MESSAGE_SENT_KNOWN] then
    latency = math.max(0, at - message[MESSAGE_SENT_AT])
  end
  if feed then
    -- In FED order.
    call.fed[#call.fed + 1] = {message[MESSAGE_MESSAGE_ID], address, from_status, to_status, at,
                               latency}
  end
  if forward then
    local domain = domain_of(address)
    -- In FORWARDED order (service.forward.items.Change).
    call.forwarded[#call.forwarded + 1] = {
      message[MESSAGE_MESSAGE_ID], address, from_status, to_status, at, latency, header,
      cause and cause[EVENT_BLOB] or '', message[MESSAGE_PROVIDERS][domain] or OTHER_PROVIDER}
  end
end

-- Search indexes ---------------------------------------------------------------
-- (See the header.) Records expire on their own; index entries are dropped when
-- found dead: by the reader, and by the merge, from the oldest end of the zset. A
-- member sent after oldest_live_ms cannot be dead (its record was merged after it
-- was sent, and lives the retention from then), so the common case costs one
-- ZRANGE. An older one may be dead: its record key was not given to this call, so
-- it is returned as a candidate (index key, member, key to probe), and the next
-- call of this group gets the probe keys in KEYS and the candidates in ARGV[trim]:
-- an entry whose probe key is gone is dropped then. Shared zsets and buckets are
-- tended once a call.

local function note_old(call, key, count)
  local candidates = call.candidates
  local rows = redis.call('ZRANGE', key, 0, count - 1, 'WITHSCORES')
  for i = 1, #rows, 2 do
    local member = rows[i]
    if tonumber(rows[i + 1]) < oldest_live then
      candidates[#candidates + 1] = key
      candidates[#candidates + 1] = member
      candidates[#candidates + 1] = index_prefix .. KEY_RECORD .. '{' .. member .. '}'
    end
  end
end

-- The last call's candidates: dropped where their probe key is gone.
local function trim_candidates()
  for i = 1, #trim, 3 do
    if redis.call('EXISTS', given(trim[i + 2])) == 0 then
      redis.call('ZREM', given(trim[i]), trim[i + 1])
    end
  end
end

local function index_add(call, key, score, handle, shared)
  redis.call('ZADD', given(key), score, handle)
  if not shared then
    note_old(call, key, 1)
  elseif not call.tended[key] then
    call.tended[key] = true
    note_old(call, key, 8)
  end
end

local function add_to_bucket(call, sent_at, handle)
  local tended, candidates = call.tended, call.candidates
  local bucket = math.floor(sent_at / index[INDEX_BUCKET_MS])
  local bucket_key = given(index_prefix .. KEY_SEND_TIME_BUCKET .. bucket)
  redis.call('APPEND', bucket_key, send_time_bytes(sent_at) .. handle)
  if tended[bucket_key] then
    return
  end
  tended[bucket_key] = true
  redis.call('EXPIRE', bucket_key, ttl)
  local buckets_key = given(index_prefix .. KEY_BUCKETS)
  redis.call('ZADD', buckets_key, bucket, bucket)
  if not tended[buckets_key] then
    tended[buckets_key] = true
    local oldest = redis.call('ZRANGE', buckets_key, 0, 0)[1]
    if oldest ~= tostring(bucket) then
      candidates[#candidates + 1] = buckets_key
      candidates[#candidates + 1] = oldest
      candidates[#candidates + 1] = index_prefix .. KEY_SEND_TIME_BUCKET .. oldest
    end
  end
end

-- A merged record's index entries: its send-time bucket (a new record), its new
-- recipients, and its status and pending entries where they moved since `before`.
local function index_message(call, message, handle, record, before)
  local sent_at = math.max(0, message[MESSAGE_SENT_AT])
  if not record.raw then
    add_to_bucket(call, sent_at, handle)
  end
  for _, address in ipairs(record.new_recipients) do
    local key = given(index_prefix .. KEY_RECIPIENT .. address)
    index_add(call, key, sent_at, handle, false)
    redis.call('EXPIRE', key, ttl)
  end
  local top, pending = rollup(record.recipients, record.mf)
  if top ~= before.top then
    if before.top >= PROBLEM_FIRST then
      redis.call('ZREM', given(index_prefix .. KEY_STATUS .. index[INDEX_STATUS_NAMES][before.top + 1]),
                 handle)
    end
    if top >= PROBLEM_FIRST then
      index_add(call, index_prefix .. KEY_STATUS .. index[INDEX_STATUS_NAMES][top + 1], sent_at, handle,
                true)
    end
  end
  if pending ~= before.pending then
    if pending then
      index_add(call, index_prefix .. KEY_PENDING, sent_at, handle, true)
    else
      redis.call('ZREM', given(index_prefix .. KEY_PENDING), handle)
    end
  end
end

-- Suppressions -----------------------------------------------------------------

-- An address newly holding a Permanent bounce or a complaint (`gained` bits) is
-- unsafe to mail again: twin of service.suppressions (the earliest reason wins; kept
-- keep_s from its own time).
local function suppress_address(message, event, address, gained)
  local at = event[EVENT_AT]
  local expires_s = math.floor((at - suppress[SUPPRESS_NOW_MS]) / 1000) + suppress[SUPPRESS_KEEP_S]
  if expires_s <= 0 then
    return
  end
  local key = given(index_prefix .. KEY_SUPPRESSION .. address)
  local current = redis.call('GET', key)
  if current and cmsgpack.unpack(current)[SUPPRESSION_SINCE_MS] <= at then
    return
  end
  local entry = {}
  entry[SUPPRESSION_SINCE_MS], entry[SUPPRESSION_MESSAGE_ID] = at, message[MESSAGE_MESSAGE_ID]
  entry[SUPPRESSION_REASON], entry[SUPPRESSION_SUBTYPE] = REASON_COMPLAINT, ''
  if band(gained, COMPLAINT_BIT) == 0 then
    entry[SUPPRESSION_REASON] = REASON_BOUNCE
    local details = cmsgpack.unpack(event[EVENT_BLOB])[STORED_DETAILS]
    if type(details) == 'table' and details[DETAIL_BOUNCE_SUBTYPE] then
      entry[SUPPRESSION_SUBTYPE] = details[DETAIL_BOUNCE_SUBTYPE]
    end
  end
  redis.call('SET', key, cmsgpack.pack(entry), 'EX', expires_s)
  redis.call('ZADD', given(index_prefix .. KEY_SUPPRESSIONS), at, address)
  -- And in its reason's listing (out of the other's, when the reason changed).
  local other = entry[SUPPRESSION_REASON] == REASON_BOUNCE and REASON_COMPLAINT or REASON_BOUNCE
  redis.call('ZADD', given(index_prefix .. KEY_SUPPRESSIONS_BY_REASON .. entry[SUPPRESSION_REASON]),
             at, address)
  if current then
    redis.call('ZREM', given(index_prefix .. KEY_SUPPRESSIONS_BY_REASON .. other), address)
  end
end

-- The record ---------------------------------------------------------------------

-- The stored record at `key` as a working copy (twin of MessageRecord), with what
-- the caps count: its fields, recipients and blob bytes.
local function read_record(key)
  local record = {raw = redis.call('GET', key), header = '', mf = 0, truncated = false,
                  recipients = {}, blobs = {}, size = 0, recipient_count = 0, blob_bytes = 0,
                  changed = false, new_recipients = {}, ordered = nil}
  if record.raw then
    local stored = cmsgpack.unpack(record.raw)
    record.header, record.mf = stored[RECORD_HEADER], stored[RECORD_FLAGS]
    record.truncated = stored[RECORD_TRUNCATED]
    record.recipients, record.blobs = stored[RECORD_RECIPIENTS], stored[RECORD_BLOBS]
    for _ in pairs(record.recipients) do
      record.recipient_count = record.recipient_count + 1
    end
    for _, blob in pairs(record.blobs) do
      record.size = record.size + 1
      record.blob_bytes = record.blob_bytes + #blob
    end
    record.size = record.size + record.recipient_count
  end
  return record
end

local function truncate(record)
  if not record.truncated then
    record.truncated = true
    record.changed = true
  end
end

-- A new address at the recipient cap: keep the smallest addresses (twin of
-- service.state._add_bits). True when `address` takes the largest one's place;
-- false when it is the largest (never kept, but its events are: indexed still, so
-- an erasure finds the record). The kept addresses are sorted once the record is
-- at its cap, so an eviction costs a binary search, not a scan of every address.
local function make_room(record, address)
  truncate(record)
  local ordered = record.ordered
  if ordered == nil then
    ordered = {}
    for kept in pairs(record.recipients) do
      ordered[#ordered + 1] = kept
    end
    table.sort(ordered, bytes_less)
    record.ordered = ordered
  end
  local largest = ordered[#ordered]
  if not bytes_less(address, largest) then
    return false
  end
  record.recipients[largest] = nil
  ordered[#ordered] = nil
  local low, high = 1, #ordered + 1
  while low < high do
    local middle = math.floor((low + high) / 2)
    if bytes_less(ordered[middle], address) then
      low = middle + 1
    else
      high = middle
    end
  end
  table.insert(ordered, low, address)
  record.recipient_count = record.recipient_count - 1
  record.size = record.size - 1
  return true
end

-- `bits` for `address` from `event` (nil: the destination) of message `m`: twin of
-- service.state._add_bits.
local function add_bits(call, m, message, record, address, bits, event, event_index)
  local recipients, mf = record.recipients, record.mf
  local old = recipients[address]
  if old == nil then
    if record.recipient_count >= max_recipients and not make_room(record, address) then
      record.new_recipients[#record.new_recipients + 1] = address
      return
    end
    recipients[address] = bits
    record.recipient_count = record.recipient_count + 1
    record.new_recipients[#record.new_recipients + 1] = address
    record.size = record.size + 1
    record.changed = true
    transition(call, m, record.header, event, event_index, address, NEW_RECIPIENT,
               status_of(bor(bits, mf)))
    if suppress and event and band(bits, UNSAFE_BITS) ~= 0 then
      suppress_address(message, event, address, band(bits, UNSAFE_BITS))
    end
    return
  end
  local new = bor(old, bits)
  if new == old then
    return
  end
  local gained = band(band(new, bnot(old)), UNSAFE_BITS)
  if suppress and event and gained ~= 0 then
    suppress_address(message, event, address, gained)
  end
  recipients[address] = new
  record.changed = true
  local before, after = status_of(bor(old, mf)), status_of(bor(new, mf))
  if before ~= after then
    transition(call, m, record.header, event, event_index, address, before, after)
  end
end

-- Event `e` of message `m`, its blob stored (or the record truncated at its caps);
-- true when it is new to the store, so its bits and counts apply.
local function store_blob(record, event)
  local field, blob = event[EVENT_FIELD], event[EVENT_BLOB]
  local current = record.blobs[field]
  if current == nil then
    if (event[EVENT_CAPPED] and record.size >= max_fields)
        or record.blob_bytes + #blob > max_blob_bytes then
      truncate(record)
    else
      record.blobs[field] = blob
      record.size = record.size + 1
      record.blob_bytes = record.blob_bytes + #blob
      record.changed = true
    end
    return true
  end
  if bytes_less(blob, current) then
    record.blob_bytes = record.blob_bytes - #current + #blob
    record.blobs[field] = blob
    record.changed = true
  end
  return false
end

-- The message's events in order: each new one's blob, message bits (a pass over
-- the recipients when they move a status) and recipients' bits.
local function merge_events(call, m, message, record)
  local events = message[MESSAGE_EVENTS]
  for e = 1, #events do
    local event = events[e]
    if store_blob(record, event) then
      if log then
        -- In APPLIED order: what the change log's statistics projection counts once.
        call.applied[#call.applied + 1] = m
        call.applied[#call.applied + 1] = e
      end
      local before_mf = record.mf
      local merged = bor(before_mf, event[EVENT_MESSAGE_BITS])
      if merged ~= before_mf then
        record.mf = merged
        record.changed = true
        for address, flags in pairs(record.recipients) do
          local before, after = status_of(bor(flags, before_mf)), status_of(bor(flags, merged))
          if before ~= after then
            transition(call, m, record.header, event, e, address, before, after)
          end
        end
      end
      for _, pair in ipairs(event[EVENT_RECIPIENT_BITS]) do
        add_bits(call, m, message, record, pair[BITS_ADDRESS], pair[BITS_BITS], event, e)
      end
    end
  end
end

-- Message `m` of the batch: read, merged (twin of service.state.merge), written
-- back with its expiry, and indexed.
local function merge_message(call, m)
  local key = KEYS[m]
  local message = batch[m][ENTRY_WRITE]
  local record = read_record(key)
  local before = {top = NO_RECORD, pending = false}
  if index and record.raw then
    before.top, before.pending = rollup(record.recipients, record.mf)
  end
  if bytes_less(record.header, message[MESSAGE_HEADER]) then
    record.header = message[MESSAGE_HEADER]
    record.changed = true
  end
  if message[MESSAGE_TRUNCATED] then
    truncate(record)
  end
  for _, address in ipairs(message[MESSAGE_DESTINATION]) do
    add_bits(call, m, message, record, address, 0, nil, DESTINATION_EVENT)
  end
  merge_events(call, m, message, record)

  -- In a replay (hold > 0), a message sent before the retention is kept only
  -- briefly, long enough to merge the rest of its events exactly once, and is not
  -- indexed: what lasts of it is what it counted in the history rollups.
  local past = hold > 0 and index and message[MESSAGE_SENT_AT] < oldest_live
  local message_ttl = past and hold or ttl
  if not record.changed then
    redis.call('EXPIRE', key, message_ttl)
    return
  end
  local stored = {}
  stored[RECORD_HEADER], stored[RECORD_FLAGS] = record.header, record.mf
  stored[RECORD_TRUNCATED] = record.truncated
  stored[RECORD_RECIPIENTS], stored[RECORD_BLOBS] = record.recipients, record.blobs
  stored[RECORD_MESSAGE_ID] = message[MESSAGE_MESSAGE_ID]
  redis.call('SET', key, cmsgpack.pack(stored), 'EX', message_ttl)
  if index and not past then
    index_message(call, message, batch[m][ENTRY_HANDLE], record, before)
  end
end

-- The streams --------------------------------------------------------------------

-- The change log (service.stores.changelog): one entry per call that changed
-- anything, for the projections to apply after the merge, each under its own
-- checkpoint. The context goes in as Python packed it; the script adds what only it
-- knows: which events were new to the store and which transitions they made. The
-- transitions name their recipient's domain, never the address: what the statistics
-- count by, and all the log needs (an erasure has nothing to reach in it).
local function append_log(call)
  local out = call.out
  if #out == 0 and #call.applied == 0 then
    return
  end
  local logged = {}
  for i = 1, #out do
    logged[i] = out[i]
  end
  for i = REPLY_ADDRESS, #out, REPLY_STRIDE do
    logged[i] = domain_of(out[i])
  end
  redis.call('XADD', key_of[OPTIONAL_KEY_LOG], 'MINID', '~', log[LOG_MIN_ID_MS], '*',
             FIELD_CONTEXT, ARGV[ARG_LOG_CONTEXT], FIELD_TRANSITIONS, cmsgpack.pack(logged),
             FIELD_APPLIED, cmsgpack.pack(call.applied))
end

local function append_streams(call)
  if log then
    append_log(call)
  end
  if feed and #call.fed > 0 then
    redis.call('XADD', key_of[OPTIONAL_KEY_FEED], 'MINID', '~', feed[FEED_MIN_ID_MS], '*',
               FIELD_TRANSITIONS, cmsgpack.pack(call.fed))
  end
  if forward and #call.forwarded > 0 then
    redis.call('XADD', key_of[OPTIONAL_KEY_FORWARD], 'MINID', '~', forward[FORWARD_MIN_ID_MS], '*',
               FIELD_TRANSITIONS, cmsgpack.pack(call.forwarded))
  end
end

-- The call -----------------------------------------------------------------------

-- An erasure since the caller read the tombstones: write nothing and say so, for
-- it to strip the writes again (an address erased before a message was sent never
-- comes back through a late event of it). The erasure job reads the records only
-- after the revision moved, so a call that passes here is one it will see.
if erasures and (redis.call('GET', key_of[OPTIONAL_KEY_ERASURES]) or NO_ERASURES) ~= erasures then
  return cmsgpack.pack({STALE_ERASURES})
end

if trim then
  trim_candidates()
end

-- A message whose merge raises (a key of the wrong type, a Lua error on what it
-- carries) is refused alone: the others of the call merge, count and publish as if
-- it were not there, and its index and error go back for the caller to park
-- (service.pipeline). Redis does not roll back what it wrote before the error; its
-- transitions are dropped from the reply and the streams, as it is poison.
local call = new_call()
local refused = {}
local function drop_after(list, length)
  for i = #list, length + 1, -1 do
    list[i] = nil
  end
end
for m = 1, #batch do
  local lengths = {#call.out, #call.applied, #call.fed, #call.forwarded}
  local ok, err = pcall(merge_message, call, m)
  if not ok then
    drop_after(call.out, lengths[1])
    drop_after(call.applied, lengths[2])
    drop_after(call.fed, lengths[3])
    drop_after(call.forwarded, lengths[4])
    refused[#refused + 1] = m
    refused[#refused + 1] = tostring(err)
  end
end

if checkpoint then
  -- Not past a refused message: the caller writes it once that is parked.
  for position, value in pairs(#refused == 0 and checkpoint or {}) do
    redis.call('HSET', key_of[OPTIONAL_KEY_CHECKPOINT], position, value)
  end
end

append_streams(call)

return cmsgpack.pack({call.out, call.candidates, refused})
