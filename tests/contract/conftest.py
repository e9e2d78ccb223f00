"""The store fixtures of the contract suite, shared by its modules."""

from tests.contract.redis_server import redis_server, redis_url  # noqa: F401
from tests.contract.test_store import clock, make_store, store  # noqa: F401
