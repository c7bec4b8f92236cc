#!/usr/bin/env python3
"""A minimal Glance client in Python, on code generated from proto/ with protoc.

It shows that the contract in proto/ is all another language needs: the messages and the
stub come from `protoc --python_out --grpc_out` (grpc_python_plugin), nothing is written by
hand. test/python-client.test.ts generates the code into a temporary directory and runs this
script against a test server; by hand:

    protoc -I proto -I /usr/include --python_out=OUT --grpc_out=OUT \\
        --plugin=protoc-gen-grpc="$(which grpc_python_plugin)" proto/glance/v1/inference.proto
    PYTHONPATH=OUT /usr/bin/python3 test/python/glance_client.py \\
        --address 127.0.0.1:50051 --image models/tiny/heldout/images/000.png \\
        --question "How many shapes are there?"

Output: the reply's text as it streams, then a newline and one summary line:
    [finish_reason=FINISH_REASON_STOP deltas=3 prompt_tokens=38 completion_tokens=3 image_tokens=16]
Exit status: 0 on success; 1 when the call fails (the gRPC status goes to stderr as
"error: CODE: message"); 2 when the generated code or the Python packages are missing.
"""

import argparse
import sys

APT_PACKAGES = "python3-grpcio python3-protobuf"

try:
    import grpc
    from glance.v1 import inference_pb2, inference_pb2_grpc
except ImportError as e:  # Say what to install rather than print a bare traceback.
    print(
        f"error: cannot import the gRPC runtime or the generated code ({e}); install the Debian "
        f"packages {APT_PACKAGES} and put protoc's output directory on PYTHONPATH",
        file=sys.stderr,
    )
    sys.exit(2)


def main() -> int:
    parser = argparse.ArgumentParser(description="Ask Glance a question about an image over gRPC.")
    parser.add_argument("--address", required=True, help="host:port of Glance's gRPC port")
    parser.add_argument("--image", required=True, help="an image file (PNG, JPEG, WebP or GIF)")
    parser.add_argument("--question", required=True)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=60.0, help="the call's deadline in seconds")
    parser.add_argument("--api-key", help="sent as `authorization: Bearer KEY` metadata")
    parser.add_argument("--ca", help="a PEM CA file: connect over TLS, trusting it")
    args = parser.parse_args()

    with open(args.image, "rb") as f:
        image = f.read()
    request = inference_pb2.GenerateRequest(
        messages=[
            inference_pb2.Message(
                role=inference_pb2.ROLE_USER,
                content=[
                    inference_pb2.Part(image=inference_pb2.Image(data=image)),
                    inference_pb2.Part(text=args.question),
                ],
            )
        ],
        # `optional` fields: temperature 0 is sent (greedy), not left to the model's default.
        sampling=inference_pb2.SamplingParams(temperature=0.0, max_tokens=args.max_tokens),
    )

    deltas = 0
    done = None
    if args.ca:
        with open(args.ca, "rb") as f:
            channel = grpc.secure_channel(args.address, grpc.ssl_channel_credentials(root_certificates=f.read()))
    else:
        channel = grpc.insecure_channel(args.address)
    with channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        try:
            metadata = [("authorization", f"Bearer {args.api_key}")] if args.api_key else None
            for response in stub.Generate(request, timeout=args.timeout, metadata=metadata):
                event = response.WhichOneof("event")
                if event == "delta":
                    deltas += 1
                    sys.stdout.write(response.delta.text)
                    sys.stdout.flush()
                elif event == "done":
                    done = response.done
        except grpc.RpcError as e:
            print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1

    if done is None:
        print("error: the stream ended without a Done message", file=sys.stderr)
        return 1
    usage = done.usage
    print()
    print(
        f"[finish_reason={inference_pb2.FinishReason.Name(done.finish_reason)} deltas={deltas} "
        f"prompt_tokens={usage.prompt_tokens} completion_tokens={usage.completion_tokens} "
        f"image_tokens={usage.image_tokens}]"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
