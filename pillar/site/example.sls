# The example site of mission/SYSTEM.md. A real site is a copy of this file
# (pillar/site/<name>.sls) selected with `sitectl master-config --site <name>`.
# Only Vault references (vault:<path>#<field>) may stand where a secret belongs.
site:
  name: example
  domain: your-domain.com
  timezone: Europe/Moscow
  locale: en_US.UTF-8

  proxmox:
    api: https://pve.your-domain.com:8006
    node: pve
    verify_ssl: true
    token_id: salt@pve!platform
    token_secret: vault:platform/proxmox#token_secret

  network:
    cidr: 10.10.10.0/24
    gateway: 10.10.10.1
    nameservers: [10.10.10.1]
    # Who may open SSH and the admin UIs on the guests.
    admin_sources: [10.10.10.0/24]

  apt:
    mirror: http://deb.debian.org/debian
    security_mirror: http://deb.debian.org/debian-security

  acme:
    directory: https://acme-v02.api.letsencrypt.org/directory
    email: hostmaster@your-domain.com

  # Admin accounts on every guest: public keys only, sudo without a password.
  # Replace the example key with your own (`ssh-keygen -t ed25519`).
  admins:
    ops:
      ssh_keys:
        - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLEonlyREPLACEwithYOURkeyEXAMPLEonlyREP ops@your-domain.com

  # VMIDs 100-107 are the owner's; the others were free and are kept here.
  guests:
    reverse-proxy:
      kind: lxc
      vmid: 100
      cores: 2
      memory: 1024
      disk: 8
      address: 10.10.10.100/24
      roles: [reverse_proxy]
    microservices:
      kind: lxc
      vmid: 101
      cores: 2
      memory: 1024
      disk: 8
      address: 10.10.10.101/24
      roles: [chat]
      uses: [postgresql, rabbitmq]
    nextcloud:
      kind: lxc
      vmid: 102
      cores: 2
      memory: 4096
      disk: 64
      address: 10.10.10.102/24
      roles: [nextcloud]
      uses: [postgresql]
      # Nextcloud's data directory on a volume of its own (PVE's mp0; docs/nextcloud.md, "Data").
      mounts:
        - {path: /srv/nextcloud-data, size: 256}
    postgresql:
      kind: lxc
      vmid: 103
      cores: 2
      memory: 4096
      disk: 32
      address: 10.10.10.103/24
      roles: [postgresql]
    mailcow:
      kind: lxc
      vmid: 104
      cores: 2
      memory: 6144
      disk: 40
      address: 10.10.10.104/24
      roles: [mailcow]
    rabbitmq:
      kind: lxc
      vmid: 105
      cores: 2
      memory: 2048
      disk: 16
      address: 10.10.10.105/24
      roles: [rabbitmq]
    git-lab-docker-runner:
      kind: lxc
      vmid: 107
      cores: 4
      memory: 4096
      disk: 64
      address: 10.10.10.107/24
      roles: [gitlab_runner]
    control:
      kind: lxc
      vmid: 110
      cores: 2
      memory: 2048
      disk: 16
      address: 10.10.10.110/24
      roles: [salt_master, deploy_runner]
    vault:
      kind: lxc
      vmid: 111
      cores: 2
      memory: 1024
      disk: 8
      address: 10.10.10.111/24
      roles: [vault]
    k3s:
      kind: lxc
      vmid: 112
      cores: 4
      memory: 8192
      disk: 64
      address: 10.10.10.112/24
      roles: [k3s]
      uses: [postgresql, rabbitmq]
    monitoring:
      kind: vm
      vmid: 120
      cores: 2
      memory: 4096
      disk: 64
      address: 10.10.10.120/24
      roles: [monitoring]
      uses: [postgresql]

  # Databases on the guest with the role postgresql: name -> owner (the login
  # role; default: the database name) and the guests that connect to it (each
  # must list the postgresql guest in its `uses`). Passwords are generated into
  # Vault (roles/postgresql/users/<owner>), never written here.
  databases:
    nextcloud: {clients: [nextcloud]}
    chat: {clients: [microservices]}
    grafana: {clients: [monitoring]}
    apps: {clients: [k3s]}

  # RabbitMQ on the guest with the role rabbitmq: vhosts, and one user per
  # consumer with the guests that connect as it (each must list the rabbitmq
  # guest in `uses`). Passwords are generated into Vault at
  # roles/rabbitmq/users/<user> (field password); nothing secret is written here.
  messaging:
    vhosts: [chat, apps]
    users:
      chat:
        clients: [microservices]
        permissions:
          chat: {configure: '.*', write: '.*', read: '.*'}
      apps:
        clients: [k3s]
        permissions:
          apps: {configure: '.*', write: '.*', read: '.*'}

  # Public names under the domain, served by the reverse proxy over HTTPS and
  # proxied over plain HTTP to a guest inside the network.
  routes:
    nextcloud:
      guest: nextcloud
      port: 80
      max_body: 16G
      timeout: 3600
    mail:
      guest: mailcow
      port: 8080
      max_body: 64M
    # The chat service's WebSocket clients come in here (upgrade passed on).
    chat:
      guest: microservices
      port: 8080
      health_path: /healthz
      websocket: true
      timeout: 3600
    # Nextcloud Office: Collabora Online on the Nextcloud guest (nextcloud:collabora:route).
    office:
      guest: nextcloud
      port: 9980
      websocket: true
      max_body: 100M
      timeout: 3600

  # The owner's apps on k3s: Go and Nest.js backends and Angular SPAs. Each gets
  # a namespace, a Deployment, a Service, an Ingress on Traefik when it has a
  # route (the reverse proxy serves <route>.<domain> over HTTPS), and the
  # passwords of the databases and broker users it names through External
  # Secrets Operator from Vault (each must list the k3s guest in its clients).
  apps:
    chat-api:
      kind: go
      image: registry.your-domain.com/apps/chat-api:1.0.0
      port: 8080
      health_path: /healthz
      databases: [apps]
      broker_users: [apps]
      route: api
    orders:
      kind: nestjs
      image: registry.your-domain.com/apps/orders:1.0.0
      port: 3000
      replicas: 1
      resources:
        requests: {cpu: 200m, memory: 256Mi}
        limits: {memory: 512Mi}
      databases: [apps]
    web:
      kind: angular
      image: registry.your-domain.com/apps/web:1.0.0
      port: 8080
      route: app

  # Mail on the guest with the role mailcow, served as mail.<domain> (its web UI
  # is the route `mail` above). Mailbox passwords are generated into Vault
  # (roles/mailcow/mailboxes/<address>, field password), never written here.
  # The DNS records of each domain (MX, SPF, DKIM, DMARC, autoconfig,
  # autodiscover, SRV) are sent to `dns.server` by RFC 2136 signed with the TSIG
  # key in Vault; without `dns`, they are written as a zone snippet on the mail
  # guest (/etc/mailcow-platform/dns/<domain>.zone) for the registrar.
  # Domains, mailboxes and aliases dropped from here are deleted from mailcow
  # only with `remove_undeclared: true` (a mailbox goes with its mail).
  mail:
    domains:
      your-domain.com:
        mailboxes:
          ops: {name: Operations}
          postmaster: {name: Postmaster, quota: 1024}
        aliases:
          abuse: [postmaster@your-domain.com]
          hostmaster: [ops@your-domain.com]
          dmarc-reports: [ops@your-domain.com]
    dmarc:
      report: dmarc-reports@your-domain.com
      policy: quarantine
    dns:
      server: 10.10.10.1
      tsig_name: mailcow-update
      tsig_secret: vault:roles/mailcow/dns-tsig#secret
    remove_undeclared: false

  # Backups off the guests (docs/backup.md): restic repositories on a REST server
  # outside the guests they protect (<repository>/<guest>-<job>), passwords in
  # Vault; and Proxmox's own vzdump of every guest of the site.
  backup:
    repository: rest:https://backup.your-domain.com:8000
    vzdump:
      storage: backup-nfs
      schedule: '01:30'
      mode: snapshot
      compress: zstd
      keep_daily: 7
      keep_weekly: 4

# The control node (salt_master role, docs/control.md): the owner's repository it
# checks out at main with a read-only deploy key (the key itself lives in Vault
# only, secret/roles/salt_master/deploy_key), and that Git server's host keys.
salt_master:
  repository:
    url: git@gitlab.your-domain.com:ops/salt-platform.git
    known_hosts:
      - gitlab.your-domain.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLEonlyREPLACEwithYOURhostKEYexampleONLYrep
