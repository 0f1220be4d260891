package api

import (
	"strings"
	"testing"
)

func TestCheckSHA256(t *testing.T) {
	good := strings.Repeat("0123456789abcdef", 4)
	if err := CheckSHA256(good); err != nil {
		t.Fatal(err)
	}
	for bad, want := range map[string]string{
		strings.ToUpper(good): "lowercase",
		good[:63]:             "63 characters",
		good + "0":            "65 characters",
		"g" + good[1:]:        `'g'`,
		"":                    "0 characters",
	} {
		err := CheckSHA256(bad)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error mentioning %s", bad, err, want)
		}
	}
}

func TestRegistrationInventoryValidation(t *testing.T) {
	base := SledRegistration{Baseboard: Baseboard{Part: "p", Serial: "s"}, SledAgentAddress: "h:1", RepoDepotPort: 2}
	if err := base.Validate(); err != nil {
		t.Fatalf("registration without inventory (an older agent): %v", err)
	}
	big := uint64(1 << 63)
	for name, mutate := range map[string]func(*SledRegistration){
		"empty path":      func(r *SledRegistration) { r.M2s = []M2Device{{Path: ""}} },
		"repeated path":   func(r *SledRegistration) { r.M2s = []M2Device{{Path: "/a"}, {Path: "/a"}} },
		"free over total": func(r *SledRegistration) { r.M2s = []M2Device{{Path: "/a", FreeBytes: 2, TotalBytes: 1}} },
		"too many":        func(r *SledRegistration) { r.M2s = make([]M2Device, MaxM2Devices+1) },
		"generation":      func(r *SledRegistration) { r.ArtifactGeneration = &big },
	} {
		r := base
		mutate(&r)
		if err := r.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestArtifactConfigValidateAndSort(t *testing.T) {
	a, b := strings.Repeat("b", 64), strings.Repeat("a", 64)
	c := ArtifactConfig{Generation: 1, Artifacts: []string{a, b}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	s := c.Sorted()
	if s.Artifacts[0] != b || c.Artifacts[0] != a {
		t.Fatalf("Sorted must sort a copy: %v / %v", s.Artifacts, c.Artifacts)
	}
	if err := (ArtifactConfig{Artifacts: []string{a, a}}).Validate(); err == nil || !strings.Contains(err.Error(), "repeats") {
		t.Fatalf("duplicate: %v", err)
	}
}
