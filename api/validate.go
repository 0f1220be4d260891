package api

import (
	"fmt"
	"net"
	"strconv"
	"unicode"
)

// FieldError names the request field at fault.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// checkLabel validates a short printable identifier (part or serial number).
func checkLabel(field, v string) error {
	if v == "" {
		return fieldErr(field, "must not be empty")
	}
	if len(v) > 64 {
		return fieldErr(field, "must be at most 64 bytes, got %d", len(v))
	}
	for _, r := range v {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return fieldErr(field, "must be printable and contain no spaces, got %q", v)
		}
	}
	return nil
}

// CheckHostPort validates a "host:port" address with a usable port.
func CheckHostPort(field, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fieldErr(field, "must be host:port, got %q", addr)
	}
	if host == "" {
		return fieldErr(field, "must name a host, got %q", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fieldErr(field, "port must be 1-65535, got %q", port)
	}
	return nil
}

// Validate checks a registration before Nexus stores it.
func (r SledRegistration) Validate() error {
	if err := checkLabel("baseboard.part", r.Baseboard.Part); err != nil {
		return err
	}
	if err := checkLabel("baseboard.serial", r.Baseboard.Serial); err != nil {
		return err
	}
	if err := CheckHostPort("sled_agent_address", r.SledAgentAddress); err != nil {
		return err
	}
	if r.RepoDepotPort < 1 || r.RepoDepotPort > 65535 {
		return fieldErr("repo_depot_port", "must be 1-65535, got %d", r.RepoDepotPort)
	}
	return r.validateInventory()
}
