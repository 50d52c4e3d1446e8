"""The LSS broker: accepts jobs from producers, load-balances them to workers, keeps results.

It imports zmq, msgpack and the standard library only (never pandas): see broker.broker
for the process, broker.core for the logic, broker.store for the results store.
"""
