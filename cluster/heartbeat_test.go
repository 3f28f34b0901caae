package cluster

import "testing"

func TestHeartbeatRoundTrip(t *testing.T) {
	for _, hb := range []Heartbeat{
		{Node: "pi-01", Boot: ^uint64(0), Injected: true, Hops: 12345, ClientURL: "nats://192.168.1.10:4222"},
		{Node: "pi-02", Boot: 1, Leaving: true},
	} {
		got, err := decodeHeartbeat(HeartbeatSubjectPrefix, HeartbeatSubjectPrefix+hb.Node, encodeHeartbeat(hb, 3))
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if got != hb {
			t.Errorf("got %+v, want %+v", got, hb)
		}
	}
}

func TestHeartbeatRejectsBadInput(t *testing.T) {
	good := encodeHeartbeat(Heartbeat{Node: "pi-01", Boot: 5}, 1)
	tests := []struct {
		name, subject, data string
	}{
		{"not json", "baton.heartbeat.pi-01", "hello"},
		{"empty", "baton.heartbeat.pi-01", ""},
		{"other subject", "baton.heartbeat.pi-02", string(good)},
		{"bad boot", "baton.heartbeat.x", `{"node":"x","boot":"zz","state":"alive"}`},
		{"bad state", "baton.heartbeat.x", `{"node":"x","boot":"1","state":"zombie"}`},
		{"bad name", "baton.heartbeat.a.b", `{"node":"a.b","boot":"1","state":"alive"}`},
		// Relays dial the client URL: only nats://IP:port is taken.
		{"host name", "baton.heartbeat.x", `{"node":"x","boot":"1","state":"alive","client":"nats://evil.example:4222"}`},
		{"other scheme", "baton.heartbeat.x", `{"node":"x","boot":"1","state":"alive","client":"http://10.0.0.1:80"}`},
		{"no port", "baton.heartbeat.x", `{"node":"x","boot":"1","state":"alive","client":"nats://10.0.0.1"}`},
	}
	for _, tt := range tests {
		if hb, err := decodeHeartbeat(HeartbeatSubjectPrefix, tt.subject, []byte(tt.data)); err == nil {
			t.Errorf("%s: accepted as %+v", tt.name, hb)
		}
	}
}
