"""The LSS broker: accepts jobs from producers, load-balances them to workers, keeps results.

It imports zmq, msgpack, the standard library and, for a PostgreSQL store only, psycopg;
never pandas. See broker.broker for the process, broker.core for the logic's facade over
broker.client_side, broker.worker_side and broker.turn, broker.jobs for the job table,
and broker.store for the results store.
"""
