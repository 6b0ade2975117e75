"""`rag serve`: a warm process that keeps the models and the index open for `rag ask` and
`rag eval`, over a private Unix socket.

- ``protocol``: the files (state, socket, lock) and the wire format; standard library only.
- ``client``: what `rag ask` runs on its fast path (socket and json only), status and stop.
- ``server``: the listener, the bounded queue and the worker thread.
- ``backend``: the warm models and index, and per-settings Searchers and Askers around them.
- ``remote``: a Searcher and an Asker that ask the server, for `rag eval`.
"""
