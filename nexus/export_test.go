package nexus

// SetTaskActivator lets tests observe the activations Nexus code requests
// (instead of the driver running them).
func (s *Server) SetTaskActivator(fn func(name, requester string)) { s.activateHook = fn }
