package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestNewWithoutANameShowsUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := newMain(nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "usage: tandem new") {
		t.Errorf("code %d, stderr %q", code, errb.String())
	}
}

func TestBuildOutsideAProjectSaysWhere(t *testing.T) {
	var out, errb bytes.Buffer
	if code := buildMain([]string{"-C", t.TempDir()}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "run it in a project `tandem new` wrote") {
		t.Errorf("code %d, stderr %q", code, errb.String())
	}
}
