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

# k3s: no build is reachable offline; everything up to the binary converges.
k3s:
  install:
    binary_available: false
    binary_unavailable_reason: no k3s build is reachable offline (GitHub releases only)

# Nextcloud converges up to the download: PHP-FPM, nginx, Redis, the data
# directory, the cron timer, the admin's password in Vault, the proxy's route.
# The lab's report lists the parts below as not converged.
nextcloud:
  application:
    converge: false
    reason: the Nextcloud server code is not packaged by Debian and its download site is unreachable
  collabora:
    converge: false
    reason: Collabora Online comes from Collabora's apt repository, unreachable here

# mailcow's stack does not run in the lab (its images are unreachable): the
# mailcow role converges Docker and installs the mail certificate, with
# nothing to reload (roles:mailcow:partial below says so in the lab's report).
reverse_proxy:
  mail_certificate:
    reload_cmd: null
mailcow:
  stack: false

# The monitoring role converges in part: Prometheus, Alertmanager and the
# blackbox exporter (Debian) for real; Grafana, Loki and the log shipper have no
# build reachable offline, so their files are rendered and checked only (the
# lab's report lists them as not converged). Alertmanager mails the lab host's
# SMTP sink (port 2525, started by tests/lab/test_site_monitoring.py) without
# TLS; the blackbox exporter cannot verify pebble's certificates (a new root on
# every start). Shorter intervals so an alert reaches the sink in a test's time.
monitoring:
  render_only:
    grafana: Grafana comes from Grafana's apt repository, unreachable here
    loki: Loki comes from Grafana's apt repository, unreachable here
    alloy: the log shipper of every guest (Grafana Alloy) comes from Grafana's apt repository, unreachable here
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

# Not converged in the lab: no build of these is reachable from this machine.
# The lab's report lists them as "not converged in the lab", never as passed.
roles:
  # k3s converges up to its binary (LXC prerequisites, config, packages); the
  # binary, its service and the cluster are not converged (k3s:install below).
  k3s:
    partial: >-
      converged up to the binary (LXC prerequisites, packages, config); NOT converged: the k3s
      binary, its service, External Secrets Operator, Vault's Kubernetes auth and the apps, because
      no k3s build is reachable offline (GitHub releases only)
  mailcow:
    partial: >-
      Docker Engine (Debian's docker.io) and the mail certificate converge;
      mailcow's stack (checkout, mailcow.conf, containers, mail domains through its
      API, DNS records with its DKIM keys) does NOT: its images come from a
      registry that is unreachable here
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
  gitlab_runner:
    partial: >-
      Docker Engine and the disk cleanup timer converge (Debian's docker.io); GitLab Runner itself
      does not, its apt repository is unreachable here (config.toml and registration are checked
      against a double of GitLab's runner API)

# GitLab Runner has no build reachable here: the runner guest gets Docker only.
gitlab_runner:
  install: false

# Docker (included by the nesting roles): Debian's docker.io, the build reachable
# here (Docker's apt repository is not); docs/docker.md.
docker:
  flavor: debian
