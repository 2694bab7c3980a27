"""Redis from the local stack, through redis-py."""

from __future__ import annotations

import redis

from parley_stack.testing import LocalStack

# Atomically take `cost` tokens when at least that many are left.
TAKE = """
local left = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
local cost = tonumber(ARGV[2])
if left < cost then return -1 end
redis.call('SET', KEYS[1], left - cost)
return left - cost
"""


def test_lua_script_runs_atomically(local_stack: LocalStack) -> None:
    local_stack.ensure("redis")
    host, port = local_stack.endpoint("redis", "redis")
    client = redis.Redis(host=host, port=port)
    client.delete("test:bucket")
    take = client.register_script(TAKE)

    assert take(keys=["test:bucket"], args=[3, 2]) == 1
    assert take(keys=["test:bucket"], args=[3, 2]) == -1
    assert client.get("test:bucket") == b"1"
