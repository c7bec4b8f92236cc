// The Go client against a running Glance: the code generated from proto/ by Debian's
// protoc-gen-go and protoc-gen-go-grpc (clients/go/glance/v1), on Debian's grpc-go and protobuf.
// test/go-client.test.ts starts a test server with an API keys file and runs this with the
// server's address, the keys and a held-out question in the environment:
//
//	GLANCE_ADDRESS        host:port of the gRPC port
//	GLANCE_API_KEY        a key without limits
//	GLANCE_LIMITED_KEY    a key allowed one request per minute
//	GLANCE_IMAGE, GLANCE_QUESTION, GLANCE_ANSWER                  a question and its answer
//	GLANCE_JSON_IMAGE, GLANCE_JSON_QUESTION, GLANCE_JSON_SCHEMA, GLANCE_JSON_ANSWER   an extraction
//
// Nothing here is skipped: a variable missing fails the test that needs it.
package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	glancev1 "glance/clients/go/glance/v1"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func env(t *testing.T, name string) string {
	t.Helper()
	value := os.Getenv(name)
	if value == "" {
		t.Fatalf("%s is not set (test/go-client.test.ts sets it)", name)
	}
	return value
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(env(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func dial(t *testing.T) glancev1.InferenceServiceClient {
	t.Helper()
	conn, err := grpc.Dial(env(t, "GLANCE_ADDRESS"), grpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return glancev1.NewInferenceServiceClient(conn)
}

// withKey is a context for one call, with its deadline, carrying the key as a bearer token.
func withKey(t *testing.T, key string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	if key == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

func question(image []byte, text string, maxTokens uint32) *glancev1.GenerateRequest {
	return &glancev1.GenerateRequest{
		Messages: []*glancev1.Message{{
			Role: glancev1.Role_ROLE_USER,
			Content: []*glancev1.Part{
				{Kind: &glancev1.Part_Image{Image: &glancev1.Image{Source: &glancev1.Image_Data{Data: image}}}},
				{Kind: &glancev1.Part_Text{Text: text}},
			},
		}},
		// Greedy: temperature 0 is sent, since the field is `optional`.
		Sampling: &glancev1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: proto.Uint32(maxTokens)},
	}
}

type reply struct {
	text   string
	deltas int
	tokens int
	done   *glancev1.Done
}

// generate runs one Generate call to its end; the error is the call's status.
func generate(ctx context.Context, client glancev1.InferenceServiceClient, req *glancev1.GenerateRequest) (reply, metadata.MD, error) {
	var r reply
	stream, err := client.Generate(ctx, req)
	if err != nil {
		return r, nil, err
	}
	for {
		res, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return r, stream.Trailer(), nil
		}
		if err != nil {
			return r, stream.Trailer(), err
		}
		if r.done != nil {
			return r, nil, errors.New("a message after Done")
		}
		switch event := res.Event.(type) {
		case *glancev1.GenerateResponse_Delta:
			r.deltas++
			r.text += event.Delta.Text
			r.tokens += len(event.Delta.TokenIds)
		case *glancev1.GenerateResponse_Done:
			r.done = event.Done
		}
	}
}

func TestGenerateStreamsAnAnswer(t *testing.T) {
	client := dial(t)
	r, _, err := generate(withKey(t, env(t, "GLANCE_API_KEY")), client, question(readFile(t, "GLANCE_IMAGE"), env(t, "GLANCE_QUESTION"), 32))
	if err != nil {
		t.Fatal(err)
	}
	if r.done == nil {
		t.Fatal("the stream ended without Done")
	}
	if r.deltas < 2 {
		t.Errorf("%d deltas: the answer did not stream", r.deltas)
	}
	if got, want := strings.TrimSpace(r.text), env(t, "GLANCE_ANSWER"); got != want {
		t.Errorf("answered %q, expected %q", got, want)
	}
	if r.done.FinishReason != glancev1.FinishReason_FINISH_REASON_STOP {
		t.Errorf("finish reason %s", r.done.FinishReason)
	}
	u := r.done.GetUsage()
	if int(u.GetCompletionTokens()) != r.tokens || u.GetImageTokens() == 0 || u.GetTotalTokens() != u.GetPromptTokens()+u.GetCompletionTokens() {
		t.Errorf("usage %v for %d streamed tokens", u, r.tokens)
	}
	if ttft := r.done.GetTimings().GetTimeToFirstToken().AsDuration(); ttft <= 0 || ttft > r.done.GetTimings().GetTotal().AsDuration() {
		t.Errorf("time to first token %s", ttft)
	}
	t.Logf("answer %q in %d deltas", r.text, r.deltas)
}

func TestExtract(t *testing.T) {
	client := dial(t)
	res, err := client.Extract(withKey(t, env(t, "GLANCE_API_KEY")), &glancev1.ExtractRequest{
		Images:      []*glancev1.Image{{Source: &glancev1.Image_Data{Data: readFile(t, "GLANCE_JSON_IMAGE")}}},
		Instruction: env(t, "GLANCE_JSON_QUESTION"),
		Schema:      &glancev1.JsonSchema{Name: "shapes", Schema: env(t, "GLANCE_JSON_SCHEMA")},
		Sampling:    &glancev1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: proto.Uint32(96)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		Shapes []struct {
			Shape string `json:"shape"`
			Color string `json:"color"`
		} `json:"shapes"`
	}
	decoder := json.NewDecoder(strings.NewReader(res.Json))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&parsed); err != nil {
		t.Fatalf("%q: %v", res.Json, err)
	}
	if n := len(parsed.Shapes); n < 1 || n > 4 {
		t.Errorf("%d shapes in %s", n, res.Json)
	}
	for _, s := range parsed.Shapes {
		if s.Shape == "" || s.Color == "" {
			t.Errorf("a shape without its name or colour: %s", res.Json)
		}
	}
	// The same value as a google.protobuf.Struct.
	var asJSON map[string]interface{}
	if err := json.Unmarshal([]byte(res.Json), &asJSON); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res.GetValue().AsMap(), asJSON) {
		t.Errorf("value %v differs from json %s", res.GetValue().AsMap(), res.Json)
	}
	var expected map[string]interface{}
	if err := json.Unmarshal([]byte(env(t, "GLANCE_JSON_ANSWER")), &expected); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(asJSON, expected) {
		t.Errorf("extracted %s, expected %s", res.Json, env(t, "GLANCE_JSON_ANSWER"))
	}
	if res.FinishReason != glancev1.FinishReason_FINISH_REASON_STOP || res.GetUsage().GetCompletionTokens() == 0 {
		t.Errorf("finish reason %s, usage %v", res.FinishReason, res.GetUsage())
	}
	t.Logf("extracted %s", res.Json)
}

func TestAPIKey(t *testing.T) {
	client := dial(t)
	req := question(readFile(t, "GLANCE_IMAGE"), env(t, "GLANCE_QUESTION"), 4)
	for name, key := range map[string]string{"no key": "", "a wrong key": "glk_wrong"} {
		_, _, err := generate(withKey(t, key), client, req)
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v, expected Unauthenticated", name, err)
		}
	}
	if _, _, err := generate(withKey(t, env(t, "GLANCE_API_KEY")), client, req); err != nil {
		t.Errorf("with the key: %v", err)
	}
	models, err := client.ListModels(withKey(t, env(t, "GLANCE_API_KEY")), &glancev1.ListModelsRequest{})
	if err != nil || len(models.Models) != 1 || !models.Models[0].Ready {
		t.Errorf("ListModels: %v %v", models, err)
	}
}

func TestRateLimitRefusalCarriesRetryInfo(t *testing.T) {
	client := dial(t)
	key := env(t, "GLANCE_LIMITED_KEY")
	req := question(readFile(t, "GLANCE_IMAGE"), env(t, "GLANCE_QUESTION"), 4)
	if _, _, err := generate(withKey(t, key), client, req); err != nil {
		t.Fatalf("the key's one request a minute: %v", err)
	}
	r, trailer, err := generate(withKey(t, key), client, req)
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("the second request: %v, expected ResourceExhausted", err)
	}
	if r.deltas != 0 || r.done != nil {
		t.Errorf("a refused call streamed %d deltas", r.deltas)
	}
	var info *errdetails.RetryInfo
	for _, detail := range st.Details() {
		if d, ok := detail.(*errdetails.RetryInfo); ok {
			info = d
		}
	}
	if info == nil {
		t.Fatalf("no google.rpc.RetryInfo in %v (details %v)", st.Proto(), st.Details())
	}
	delay := info.GetRetryDelay().AsDuration()
	if delay < 30*time.Second || delay > time.Minute {
		t.Errorf("RetryInfo says retry in %s; the minute's bucket refills in under a minute", delay)
	}
	// The same delay for grpc's retry policies, in milliseconds.
	pushback, err := strconv.Atoi(strings.Join(trailer.Get("grpc-retry-pushback-ms"), ""))
	if err != nil || time.Duration(pushback)*time.Millisecond-delay > time.Second || delay-time.Duration(pushback)*time.Millisecond > time.Second {
		t.Errorf("grpc-retry-pushback-ms %v, RetryInfo %s", trailer.Get("grpc-retry-pushback-ms"), delay)
	}
	t.Logf("%s: %s; retry in %s", st.Code(), st.Message(), delay)
}
