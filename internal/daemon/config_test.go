package daemon

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// setEnv replaces every BATON_ variable for the test with vars.
func setEnv(t *testing.T, vars map[string]string) {
	t.Helper()
	for _, name := range []string{
		"NODE_NAME", "CLUSTER_NAME", "SECRET", "MULTICAST_ADDR", "MULTICAST_PORT",
		"MULTICAST_IF", "MULTICAST_TTL", "SEEDS", "HTTP_ADDR", "BATONS", "MIN_NODES",
		"PEER_CHOICE", "LEADER", "HEARTBEAT_INTERVAL", "SUSPECT_AFTER", "DEAD_AFTER",
		"ANNOUNCE_INTERVAL", "LEAVE_GRACE", "LOSS_TIMEOUT", "DIRECT",
	} {
		t.Setenv("BATON_"+name, "")
	}
	for k, v := range vars {
		t.Setenv(k, v)
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	setEnv(t, map[string]string{"BATON_SECRET": "x", "BATON_NODE_NAME": "pi-01"})
	c, err := LoadConfig()
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if c.ClusterName != "baton" || c.MulticastAddr != "239.255.100.100" || c.MulticastPort != 45892 ||
		c.MulticastTTL != 1 || c.HTTPAddr != ":8380" || c.Batons != 1 || c.MinNodes != 2 {
		t.Errorf("defaults differ from DESIGN.md: %+v", c)
	}
}

// Every bad value is reported with the name of its variable.
func TestLoadConfigErrorsNameTheVariable(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "BATON_SECRET"},
		{map[string]string{"BATON_NODE_NAME": "pi.local"}, "BATON_NODE_NAME"},
		{map[string]string{"BATON_CLUSTER_NAME": "a b"}, "BATON_CLUSTER_NAME"},
		{map[string]string{"BATON_MULTICAST_ADDR": "10.0.0.1"}, "BATON_MULTICAST_ADDR"},
		{map[string]string{"BATON_MULTICAST_PORT": "70000"}, "BATON_MULTICAST_PORT"},
		{map[string]string{"BATON_MULTICAST_PORT": "many"}, "BATON_MULTICAST_PORT"},
		{map[string]string{"BATON_MULTICAST_TTL": "0"}, "BATON_MULTICAST_TTL"},
		{map[string]string{"BATON_SEEDS": "host:notaport"}, "BATON_SEEDS"},
		{map[string]string{"BATON_HTTP_ADDR": "8380"}, "BATON_HTTP_ADDR"},
		{map[string]string{"BATON_BATONS": "-1"}, "BATON_BATONS"},
		{map[string]string{"BATON_MIN_NODES": "0"}, "BATON_MIN_NODES"},
		{map[string]string{"BATON_PEER_CHOICE": "roundrobin"}, "BATON_PEER_CHOICE"},
		{map[string]string{"BATON_HEARTBEAT_INTERVAL": "soon"}, "BATON_HEARTBEAT_INTERVAL"},
		{map[string]string{"BATON_DEAD_AFTER": "1s"}, "BATON_DEAD_AFTER"},
		{map[string]string{"BATON_HEARTBEAT_INTERVAL": "1ns"}, "BATON_HEARTBEAT_INTERVAL"},
		{map[string]string{"BATON_ANNOUNCE_INTERVAL": "1ns"}, "BATON_ANNOUNCE_INTERVAL"},
		{map[string]string{"BATON_LEAVE_GRACE": "10m"}, "BATON_LEAVE_GRACE"},
		{map[string]string{"BATON_LOSS_TIMEOUT": "100ms"}, "BATON_LOSS_TIMEOUT"},
		// Decimal only: envconfig alone reads 010 as 8 and 0x10 as 16.
		{map[string]string{"BATON_MULTICAST_PORT": "010"}, "BATON_MULTICAST_PORT"},
		{map[string]string{"BATON_MULTICAST_PORT": "0x10"}, "BATON_MULTICAST_PORT"},
		{map[string]string{"BATON_BATONS": "1_000"}, "BATON_BATONS"},
		{map[string]string{"BATON_DIRECT": "maybe"}, "BATON_DIRECT"},
	}
	for _, tt := range tests {
		env := map[string]string{"BATON_SECRET": "x", "BATON_NODE_NAME": "pi-01"}
		for k, v := range tt.env {
			env[k] = v
		}
		if len(tt.env) == 0 {
			delete(env, "BATON_SECRET")
		}
		setEnv(t, env)
		_, err := LoadConfig()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("env %v: error %v, want one naming %s", tt.env, err, tt.want)
		}
	}
}

func TestSeedsDefaultToDiscoveryPort(t *testing.T) {
	c := Config{MulticastPort: 45892, Seeds: []string{"127.0.0.2", " 127.0.0.3:999 ", ""}}
	addrs, err := c.seedAddrs()
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 2 || addrs[0].String() != "127.0.0.2:45892" || addrs[1].String() != "127.0.0.3:999" {
		t.Errorf("seeds %v", addrs)
	}
}

func TestConfigLogValueRedactsSecret(t *testing.T) {
	c := Config{NodeName: "a", Secret: "hunter2-very-secret"}
	if s := c.LogValue().String(); strings.Contains(s, "hunter2") {
		t.Errorf("log value leaks the secret: %s", s)
	}
}

// .env.example must list every variable the daemon reads, since operators
// and the Ansible role take it as the reference.
func TestEnvExampleListsEveryVariable(t *testing.T) {
	data, err := os.ReadFile("../../.env.example")
	if err != nil {
		t.Fatal(err)
	}
	rt := reflect.TypeOf(Config{})
	for i := range rt.NumField() {
		name := EnvPrefix + "_" + rt.Field(i).Tag.Get("envconfig")
		if !strings.Contains(string(data), "\n"+name+"=") {
			t.Errorf(".env.example does not list %s", name)
		}
	}
}

// Every malformed variable is reported, not only the first.
func TestLoadConfigReportsEveryMalformedVariable(t *testing.T) {
	setEnv(t, map[string]string{
		"BATON_SECRET":         "x",
		"BATON_MULTICAST_TTL":  "x",
		"BATON_MULTICAST_PORT": "0x10",
		"BATON_BATONS":         "many",
		"BATON_DEAD_AFTER":     "soon",
	})
	_, err := LoadConfig()
	for _, name := range []string{"BATON_MULTICAST_TTL", "BATON_MULTICAST_PORT", "BATON_BATONS", "BATON_DEAD_AFTER"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("error %v does not name %s", err, name)
		}
	}
}

func TestHTTPOffIsValid(t *testing.T) {
	setEnv(t, map[string]string{"BATON_SECRET": "x", "BATON_NODE_NAME": "a", "BATON_HTTP_ADDR": "off"})
	if _, err := LoadConfig(); err != nil {
		t.Errorf("BATON_HTTP_ADDR=off: %v", err)
	}
}

func TestUnknownVariablesAreReported(t *testing.T) {
	t.Setenv("BATON_MULTICAST_IFACE", "eth1") // a typo of BATON_MULTICAST_IF
	t.Setenv("BATON_SECRET", "x")
	got := UnknownVariables()
	if !slices.Contains(got, "BATON_MULTICAST_IFACE") || slices.Contains(got, "BATON_SECRET") {
		t.Errorf("unknown variables %v", got)
	}
}
