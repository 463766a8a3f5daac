# The lab: the same site on one Linux machine, in LXC guests on the bridge the
# lab creates (sitelab0, 10.77.0.0/24). Only what must differ is here:
# addresses on the lab bridge, the master (the lab host itself), the lab's
# ACME directory, and the roles that have no build reachable offline.
# The lab's generated values (Jinja, read on the master): overlays/lab_generated.sls.
include:
  - overlays.lab_generated

site:
  network:
    cidr: 10.77.0.0/24
    gateway: 10.77.0.1
    admin_sources: [10.77.0.1/32]
  salt:
    master: 10.77.0.1
  acme:
    directory: https://10.77.0.1:14000/dir
    email: hostmaster@your-domain.com
    dns_server: 10.77.0.1
  # The lab's backup repository: restic's REST protocol served by rclone on the lab host
  # (`sitectl lab up` starts it), off every guest. No Proxmox here: vzdump is not declared.
  backup:
    repository: rest:http://10.77.0.1:8008
  guests:
    reverse-proxy: {address: 10.77.0.100/24}
    microservices: {address: 10.77.0.101/24}
    nextcloud: {address: 10.77.0.102/24}
    postgresql: {address: 10.77.0.103/24}
    mailcow: {address: 10.77.0.104/24}
    rabbitmq: {address: 10.77.0.105/24}
    git-lab-docker-runner: {address: 10.77.0.107/24}
    control: {address: 10.77.0.110/24}
    vault: {address: 10.77.0.111/24}
    k3s: {address: 10.77.0.112/24}
    monitoring: {address: 10.77.0.120/24}

# Vault: OpenBao (the build reachable here), its binary served by the master from
# the lab's own file root (<state_dir>/lab-files, filled by `sitectl lab up`).
vault:
  server:
    flavor: openbao
    binary_source: salt://lab/openbao/bao

# What has no build reachable from this machine is switched off one way, in the
# role's own parameters: `<role>: {<part>: {converge: false, reason: ...}}`. The
# part's files are still rendered and checked; the lab's report lists each such
# part as "converged in part", with the reason, never as passed. A whole role
# that cannot converge here is switched off in `roles` at the end.

# k3s converges up to its binary (LXC prerequisites, packages, config).
k3s:
  install:
    converge: false
    reason: >-
      no k3s build is reachable offline (GitHub releases only): the k3s binary, its service,
      External Secrets Operator, Vault's Kubernetes auth and the apps are not converged

# Nextcloud converges up to the download: PHP-FPM, nginx, Redis, the data
# directory, the cron timer, the admin's password in Vault, the proxy's route.
nextcloud:
  application:
    converge: false
    reason: the Nextcloud server code is not packaged by Debian and its download site is unreachable
  collabora:
    converge: false
    reason: Collabora Online comes from Collabora's apt repository, unreachable here

# mailcow's stack does not run in the lab (its images are unreachable): the
# mailcow role converges Docker and installs the mail certificate, with
# nothing to reload.
reverse_proxy:
  mail_certificate:
    reload_cmd: null
mailcow:
  stack:
    converge: false
    reason: >-
      mailcow's stack (checkout, mailcow.conf, containers, mail domains through its API, DNS
      records with its DKIM keys): its images come from a registry that is unreachable here

# The monitoring role converges in part: Prometheus, Alertmanager and the
# blackbox exporter (Debian) for real; Grafana, Loki and the log shipper have no
# build reachable offline, so their files are rendered and checked only.
# Alertmanager mails the lab host's
# SMTP sink (port 2525, started by tests/lab/test_site_monitoring.py) without
# TLS; the blackbox exporter cannot verify pebble's certificates (a new root on
# every start). Shorter intervals so an alert reaches the sink in a test's time.
monitoring:
  grafana:
    converge: false
    reason: Grafana comes from Grafana's apt repository, unreachable here
  loki:
    converge: false
    reason: Loki comes from Grafana's apt repository, unreachable here
  alloy:
    converge: false
    reason: the log shipper of every guest (Grafana Alloy) comes from Grafana's apt repository, unreachable here
  prometheus:
    scrape_interval: 10s
    evaluation_interval: 10s
  alertmanager:
    smarthost: 10.77.0.1:2525
    require_tls: false
    group_wait: 10s
    group_interval: 20s
  blackbox:
    verify_tls: false

# Whole roles not converged in the lab. The lab's report lists them as "not
# converged in the lab", never as passed.
roles:
  salt_master:
    converge: false
    reason: >-
      the lab's master is the lab host itself; the role converges a working master in the scratch
      lab instead (tests/control/test_role_lab.py, docs/control.md)
  deploy_runner:
    converge: false
    reason: >-
      GitLab Runner comes from GitLab's apt repository, unreachable here (config.toml and
      registration are checked against a double of GitLab's runner API, tests/states/test_gitlab_runner.py)

# GitLab Runner has no build reachable here: the runner guest gets Docker Engine
# and the disk cleanup timer only.
gitlab_runner:
  install:
    converge: false
    reason: >-
      GitLab Runner comes from GitLab's apt repository, unreachable here (config.toml and
      registration are checked against a double of GitLab's runner API)

# Docker (included by the nesting roles): Debian's docker.io, the build reachable
# here (Docker's apt repository is not); docs/docker.md.
docker:
  flavor: debian
