"""The one lease: which process of a fleet does a job that must run once at a time
(alert evaluation, a forwarding subscription's sending, a slot group's statistics
projection), held while renewed and taken over when its holder stops renewing.

Both scripts take the lease key as KEYS[1] and the holder's id as ARGV[1].
"""

from __future__ import annotations

# ARGV[2]: the lease's life (ms). 1 when ``holder`` holds it afterwards: taken when
# free, renewed when already its own; 0 when another holds it.
TAKE_OR_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Let go, only if still its own (one that ran out may be another's by now).
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
