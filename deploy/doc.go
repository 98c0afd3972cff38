// Package deploy holds tcpstate's deployment files: a Kubernetes DaemonSet,
// Service and ServiceMonitor (kubernetes/), a systemd unit (systemd/) and
// Prometheus alerting rules with their unit tests (prometheus/). Its tests
// decode the manifests strictly into the Kubernetes and Prometheus Operator
// API types, run systemd-analyze verify on the unit and promtool on the
// rules.
package deploy
