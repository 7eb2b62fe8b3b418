// Package doclinks checks, as part of make test, that every relative link in
// the README, under docs/ and in bench/HISTORY.md points at a file inside the
// repository and, when it names an anchor, at a heading that GitHub renders
// with that anchor. It has no code outside its tests: the check is the test.
package doclinks
