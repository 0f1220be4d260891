module github.com/rackplane/rackplane

go 1.26
