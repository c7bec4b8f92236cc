// Command example asks Glance a question about an image over gRPC and prints the answer as it
// streams, with the Go code generated from proto/ (package glancev1, clients/go/glance/v1).
//
//	go run ./example --address 127.0.0.1:50051 --image models/tiny/heldout/images/000.png \
//	    --question "How many shapes are there?" [--api-key KEY]
//
// Output: the reply's text as it streams, then a newline and one summary line:
//
//	[finish_reason=FINISH_REASON_STOP deltas=3 prompt_tokens=38 completion_tokens=3 image_tokens=16]
//
// A failed call prints "error: CODE: message" to stderr and exits 1; a refusal that says when to
// retry (RESOURCE_EXHAUSTED from a rate limit, with google.rpc.RetryInfo) adds "retry in DELAY".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	glancev1 "glance/clients/go/glance/v1"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func main() {
	address := flag.String("address", "127.0.0.1:50051", "host:port of Glance's gRPC port")
	image := flag.String("image", "", "an image file (PNG, JPEG, WebP or GIF)")
	question := flag.String("question", "Describe this image.", "the question")
	maxTokens := flag.Uint("max-tokens", 64, "the most tokens to generate")
	apiKey := flag.String("api-key", os.Getenv("GLANCE_API_KEY"), "sent as `authorization: Bearer KEY` metadata (default $GLANCE_API_KEY)")
	timeout := flag.Duration("timeout", time.Minute, "the call's deadline")
	flag.Parse()
	if *image == "" {
		fmt.Fprintln(os.Stderr, "error: --image is required")
		os.Exit(2)
	}
	data, err := os.ReadFile(*image)
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(2)
	}

	conn, err := grpc.Dial(*address, grpc.WithInsecure())
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
	defer conn.Close()
	client := glancev1.NewInferenceServiceClient(conn)

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if *apiKey != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+*apiKey)
	}
	stream, err := client.Generate(ctx, &glancev1.GenerateRequest{
		Messages: []*glancev1.Message{{
			Role: glancev1.Role_ROLE_USER,
			Content: []*glancev1.Part{
				{Kind: &glancev1.Part_Image{Image: &glancev1.Image{Source: &glancev1.Image_Data{Data: data}}}},
				{Kind: &glancev1.Part_Text{Text: *question}},
			},
		}},
		// `optional` fields: temperature 0 is sent (greedy), not left to the model's default.
		Sampling: &glancev1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: proto.Uint32(uint32(*maxTokens))},
	})
	if err != nil {
		fail(err)
	}
	deltas := 0
	for {
		res, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fail(err)
		}
		switch event := res.Event.(type) {
		case *glancev1.GenerateResponse_Delta:
			deltas++
			fmt.Print(event.Delta.Text)
		case *glancev1.GenerateResponse_Done:
			u := event.Done.Usage
			fmt.Printf("\n[finish_reason=%s deltas=%d prompt_tokens=%d completion_tokens=%d image_tokens=%d]\n",
				event.Done.FinishReason, deltas, u.GetPromptTokens(), u.GetCompletionTokens(), u.GetImageTokens())
		}
	}
}

// fail prints the call's status, and when to retry if the server said, and exits 1.
func fail(err error) {
	st := status.Convert(err)
	fmt.Fprintf(os.Stderr, "error: %s: %s", st.Code(), st.Message())
	if delay, ok := RetryDelay(err); ok {
		fmt.Fprintf(os.Stderr, " [RetryInfo: retry after %s]", delay)
	}
	fmt.Fprintln(os.Stderr)
	os.Exit(1)
}

// RetryDelay reads google.rpc.RetryInfo from a call's error: Glance sends it with
// RESOURCE_EXHAUSTED when a rate limit refuses the call.
func RetryDelay(err error) (time.Duration, bool) {
	for _, detail := range status.Convert(err).Details() {
		if info, ok := detail.(*errdetails.RetryInfo); ok {
			return info.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}
