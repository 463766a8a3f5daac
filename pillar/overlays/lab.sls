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

# mailcow does not run in the lab: the renewed mail certificate is handed over to
# the mailcow guest and installed there, with nothing to reload.
reverse_proxy:
  mail_certificate:
    reload_cmd: null

# Not converged in the lab: no build of these is reachable from this machine.
# The lab's report lists them as "not converged in the lab", never as passed.
roles:
  k3s:
    converge: false
    reason: no k3s build is reachable offline (GitHub releases only)
  monitoring:
    converge: false
    reason: Grafana and Loki have no build reachable offline (vendor repositories only)
  nextcloud:
    converge: false
    reason: the Nextcloud server code is not packaged by Debian and its download site is unreachable
  mailcow:
    converge: false
    reason: mailcow runs as Docker images from a registry that is unreachable here
  gitlab_runner:
    converge: false
    reason: GitLab Runner comes from GitLab's apt repository, unreachable here
