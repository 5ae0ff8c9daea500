package readme

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestExamples(t *testing.T) {
	root := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(root, "go.mod"), []byte("module x\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(root, "README.md"), []byte(
		"$ tool outside a block\n"+
			"```\n$ tool -a b\nout 1\nout 2\n$ other x\nnot tool's\n$ tool\n```\n"+
			"text\n```sh\n$ tool -c\n\nafter a blank\n```\n"), 0o600))
	sub := filepath.Join(root, "cmd", "tool")
	require.NoError(t, os.MkdirAll(sub, 0o700))
	ex, err := Examples(sub, "tool")
	require.NoError(t, err)
	assert.Equal(t, []Example{
		{Args: []string{"-a", "b"}, Output: []string{"out 1", "out 2"}},
		{Args: []string{}},
		{Args: []string{"-c"}, Output: []string{"", "after a blank"}},
	}, ex)

	_, err = Examples(t.TempDir(), "tool")
	assert.Error(t, err, "no README")
}
