package cluster

import (
	"crypto/tls"
	"crypto/x509"
)

// MutualTLS returns the TLS configuration for routes when mutual TLS is
// on: every route, in either direction, presents cert and must present
// one signed by a CA in pool. The route password is still required on
// top, so a stolen certificate alone does not make a node.
//
// Peers are dialled by IP address, and Pis often get theirs from DHCP,
// so the name checked in a peer's certificate is not its address but the
// cluster name (serverName): every node's certificate carries it as a DNS
// name, with both server and client authentication as uses.
func MutualTLS(cert tls.Certificate, pool *x509.CertPool, serverName string) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ServerName:   serverName,
		MinVersion:   tls.VersionTLS13,
	}
}
