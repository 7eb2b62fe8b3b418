// Package helm pins helm, which the Helm chart's test renders with
// (deploy/helm). It is a module of its own so that helm's Kubernetes
// dependencies stay out of the relay's go.mod; make builds it into
// bin/helm with `go build helm.sh/helm/v3/cmd/helm` here.
package helm
