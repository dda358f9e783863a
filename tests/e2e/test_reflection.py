#!/usr/bin/python3
"""test_reflection.py — server reflection (grpc.reflection.v1alpha, stubs
from proto/reflection.proto): list_services names tconst.v1.TConst and
grpc.health.v1.Health; file_containing_symbol("tconst.v1.TConst") returns a
FileDescriptorProto that parses (descriptor_pb2), declares the service with
the same methods as proto/tconst.proto, and is enough to build a dynamic
client (descriptor pool + message factory) that runs a Generate; several
requests on one reflection stream; unknown symbols get an error_response.
"""
import queue

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from harness import Daemon, run


def body(env, ck):
    rpb = env.refl_pb
    with Daemon(env) as d:
        ch = d.channel()
        rs = env.refl_grpc.ServerReflectionStub(ch)
        q = queue.Queue()
        it = rs.ServerReflectionInfo(iter(q.get, None), timeout=60)

        def ask(**kw):
            q.put(rpb.ServerReflectionRequest(host="", **kw))
            return next(it)

        r = ask(list_services="*")
        names = {x.name for x in r.list_services_response.service}
        ck.check({"tconst.v1.TConst", "grpc.health.v1.Health"} <= names,
                 "list_services names tconst.v1.TConst and grpc.health.v1.Health", str(names))
        ck.equal(r.original_request.list_services, "*", "the response echoes its original_request")

        r = ask(file_containing_symbol="tconst.v1.TConst")
        ck.equal(r.WhichOneof("message_response"), "file_descriptor_response",
                 "file_containing_symbol(tconst.v1.TConst) returns a file descriptor")
        blobs = list(r.file_descriptor_response.file_descriptor_proto)
        fdp = descriptor_pb2.FileDescriptorProto()
        fdp.ParseFromString(blobs[0])
        ck.equal((fdp.name, fdp.package), ("tconst.proto", "tconst.v1"), "it parses as FileDescriptorProto "
                                                                         "tconst.proto, package tconst.v1")
        svc = [sv for sv in fdp.service if sv.name == "TConst"]
        ck.check(len(svc) == 1, "it declares service TConst")
        local = env.pb.DESCRIPTOR.services_by_name["TConst"]
        want = {(m.name, m.input_type.full_name, m.output_type.full_name) for m in local.methods}
        got = {(m.name, m.input_type.lstrip("."), m.output_type.lstrip(".")) for m in (svc[0].method if svc else [])}
        ck.equal(got, want, "its methods (names, request and response types) == proto/tconst.proto's")
        gen = [m for m in (svc[0].method if svc else []) if m.name == "Generate"]
        ck.check(gen and gen[0].server_streaming and not gen[0].client_streaming, "Generate is server-streaming")

        # a client built only from the reflected descriptor
        pool = descriptor_pool.DescriptorPool()
        pool.Add(fdp)
        # GetMessageClass (protobuf >= 4.22) replaced MessageFactory.GetPrototype
        # (gone in 5.x); Debian 12 has 3.21
        if hasattr(message_factory, "GetMessageClass"):
            msg_class = message_factory.GetMessageClass
        else:
            msg_class = message_factory.MessageFactory(pool).GetPrototype
        Req = msg_class(pool.FindMessageTypeByName("tconst.v1.GenerateRequest"))
        Resp = msg_class(pool.FindMessageTypeByName("tconst.v1.GenerateResponse"))
        req = Req(token_ids=[3, 1, 4, 1, 5])
        req.sampling.max_tokens = 20
        req.sampling.ignore_eos = True
        call = ch.unary_stream("/tconst.v1.TConst/Generate", request_serializer=Req.SerializeToString,
                               response_deserializer=Resp.FromString)
        ids = [t for m in call(req, timeout=30) for t in m.token_ids]
        ck.equal(ids, env.generate(d.model_dir, [3, 1, 4, 1, 5], 20, ignore_eos=True),
                 "a dynamic client from the reflected descriptor runs Generate (== tconst generate)")

        r = ask(file_containing_symbol="grpc.health.v1.Health")
        h = descriptor_pb2.FileDescriptorProto.FromString(r.file_descriptor_response.file_descriptor_proto[0])
        ck.check(h.package == "grpc.health.v1" and [sv.name for sv in h.service] == ["Health"],
                 "file_containing_symbol(grpc.health.v1.Health) names the Health service")
        r = ask(file_by_filename="tconst.proto")
        ck.equal(r.file_descriptor_response.file_descriptor_proto[:1], blobs[:1],
                 "file_by_filename(tconst.proto) returns the same file")
        r = ask(file_containing_symbol="no.such.Service")
        ck.check(r.WhichOneof("message_response") == "error_response" and r.error_response.error_code == 5,
                 "an unknown symbol gets error_response NOT_FOUND", str(r))
        for sym in ("tconst.v1.NoSuch", "tconst.v1.TConst.Nope", "tconst.v1.GenerateRequest.Nope"):
            r = ask(file_containing_symbol=sym)
            ck.check(r.WhichOneof("message_response") == "error_response" and r.error_response.error_code == 5,
                     f"an unknown symbol in a known package ({sym}) gets NOT_FOUND", str(r))
        for sym in ("tconst.v1.TConst.Generate", "tconst.v1.FinishReason",
                    "grpc.health.v1.HealthCheckResponse.ServingStatus"):
            r = ask(file_containing_symbol=sym)
            ck.check(r.WhichOneof("message_response") == "file_descriptor_response",
                     f"{sym} (method, enum, nested enum) resolves to its file", str(r))
        r = ask(file_by_filename="nope.proto")
        ck.check(r.WhichOneof("message_response") == "error_response" and r.error_response.error_code == 5,
                 "an unknown file gets error_response NOT_FOUND", str(r))
        q.put(None)
        ck.equal(list(it), [], "half-close ends the reflection stream OK")


if __name__ == "__main__":
    run("e2e reflection", body)
