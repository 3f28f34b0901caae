package cluster

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// PickInterface returns the interface used for discovery. A name picks
// that interface. No name picks the interface the kernel would route the
// multicast group through; the returned reason says so, for the log. (A
// UDP "connect" only looks the route up; it sends nothing.)
func PickInterface(name string, group net.IP) (ifi *net.Interface, reason string, err error) {
	if name != "" {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, "", fmt.Errorf("no interface named %q (have: %s)", name, interfaceNames())
		}
		return ifi, "set by configuration", nil
	}

	c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: group, Port: 9})
	if err != nil {
		return nil, "", fmt.Errorf("no route to multicast group %s; name an interface: %w", group, err)
	}
	local := c.LocalAddr().(*net.UDPAddr).IP
	c.Close()

	ifs, err := net.Interfaces()
	if err != nil {
		return nil, "", fmt.Errorf("list interfaces: %w", err)
	}
	for i := range ifs {
		if ip, err := InterfaceIPv4(&ifs[i]); err == nil && ip.Equal(local) {
			return &ifs[i], fmt.Sprintf("the route to %s leaves through it (source %s)", group, local), nil
		}
	}
	return nil, "", fmt.Errorf("the route to %s uses source %s, which is on no interface; name an interface", group, local)
}

// InterfaceIPv4 returns the first IPv4 address of ifi.
func InterfaceIPv4(ifi *net.Interface) (net.IP, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", ifi.Name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.To4(), nil
		}
	}
	return nil, fmt.Errorf("interface %s: %w", ifi.Name, ErrNoAddress)
}

// ErrNoAddress means an interface has no IPv4 address (yet).
var ErrNoAddress = errors.New("no IPv4 address")

func interfaceNames() string {
	ifs, err := net.Interfaces()
	if err != nil {
		return "unknown"
	}
	names := make([]string, len(ifs))
	for i, ifi := range ifs {
		names[i] = ifi.Name
	}
	return strings.Join(names, ", ")
}
