package sledagent_test

import (
	"testing"

	"github.com/rackplane/rackplane/internal/sledtest"
	"github.com/rackplane/rackplane/sledagent"
)

func TestSledAgentRequiresDataDir(t *testing.T) {
	if _, err := sledagent.New(sledagent.Config{ListenAddr: "127.0.0.1:0", RepoDepotAddr: "127.0.0.1:0"}, sledtest.Logger(t, "sled")); err == nil {
		t.Fatal("sled agent started without a data dir")
	}
}
