"""Riak KV's Protocol Buffers client protocol: the messages (riak.proto, and the
riak_pb2 module generated from it by `make proto`) and the framing (frames.py).

Shared by the node's PB API (net/pb_api.py) and the client's PB transport
(client/pb.py): it is the wire format, not server code.
"""
