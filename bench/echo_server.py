"""A gRPC server that answers SearchByEmbedding with a canned reply of 64 x 10
matches and does nothing else: the floor under any facebank answer of that
size (request parsed, reply sent, both processes in Python). Prints its port."""

from __future__ import annotations

from concurrent import futures

import grpc

from facebank.v1 import facebank_pb2 as pb


def canned_reply() -> bytes:
    reply = pb.SearchByEmbeddingResponse(threshold=-1.0)
    for i in range(64):
        matches = reply.results.add().matches
        for j in range(10):
            matches.add(identity_id=str(10 * i + j), score=0.5, face_ids=[100 * i + 10 * j + 1])
    return reply.SerializeToString()


def main() -> None:
    reply = canned_reply()
    handler = grpc.method_handlers_generic_handler("facebank.v1.Search", {
        "SearchByEmbedding": grpc.unary_unary_rpc_method_handler(
            lambda request, context: reply, request_deserializer=pb.SearchByEmbeddingRequest.FromString, response_serializer=lambda b: b),
    })
    server = grpc.server(futures.ThreadPoolExecutor(4), options=[("grpc.max_receive_message_length", 64 << 20)])
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
