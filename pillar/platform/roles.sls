# The role catalog: what each role applies and which inbound traffic it needs.
# This is the one place a role declares a port; the firewall of every guest is
# generated from it (and from the site's routes and `uses` relations).
#
# from: any | site | admin | consumers | role:<role> | guest:<name> | <CIDR>
#   site      every guest's address
#   admin     site.network.admin_sources
#   consumers the guests whose `uses` names this guest
# states: the SLS applied to a guest with the role (top.sls reads this).
# converge: false switches a role off (the lab overlay does, with a reason).
# nesting: true makes an LXC guest with the role a nested container (Docker, k3s).
# needs: the roles whose service this role's service connects to; the site must
#   have a guest with each, and the guest with this role must list it in `uses`.
# system_users: accounts the role's packages create; no admin may be named so
#   (base: Debian's own accounts and the node exporter's).
roles:
  base:
    description: every guest (applied implicitly)
    states: [common]
    system_users: [root, daemon, bin, sys, sync, games, man, lp, mail, news, uucp, proxy, www-data, backup,
                   list, irc, gnats, nobody, _apt, messagebus, sshd, systemd-network, systemd-resolve,
                   systemd-timesync, systemd-journal, systemd-coredump, polkitd, admin, operator, prometheus]
    firewall:
      - {name: ssh, port: 22, from: [admin]}
      - {name: node-exporter, port: 9100, from: ['role:monitoring']}
  salt_master:
    description: the Salt master that converges the site
    states: [salt_master, backup.master]
    firewall:
      - {name: salt-publish, port: 4505, from: [site]}
      - {name: salt-request, port: 4506, from: [site]}
  deploy_runner:
    description: the CI runner that applies the state tree on a push to main
    states: [gitlab_runner]
    system_users: [gitlab-runner]
    firewall:
      - {name: gitlab-runner-metrics, port: 9252, from: ['role:monitoring']}
  vault:
    description: Vault (or OpenBao), the only home of secret values
    states: [vault]
    system_users: [vault, openbao]
    firewall:
      - {name: vault-api, port: 8200, from: [site, admin]}
      # A listener of its own that serves metrics without a token.
      - {name: vault-metrics, port: 8210, from: ['role:monitoring']}
  postgresql:
    description: PostgreSQL for the web applications
    states: [postgresql]
    system_users: [postgres]
    firewall:
      - {name: postgresql, port: 5432, from: [consumers]}
      - {name: postgres-exporter, port: 9187, from: ['role:monitoring']}
  rabbitmq:
    description: RabbitMQ for asynchronous tasks between microservices
    states: [rabbitmq]
    system_users: [rabbitmq, epmd]
    firewall:
      - {name: amqp, port: 5672, from: [consumers]}
      - {name: rabbitmq-management, port: 15672, from: [admin]}
      - {name: rabbitmq-prometheus, port: 15692, from: ['role:monitoring']}
  reverse_proxy:
    description: nginx with Let's Encrypt, the only door from outside
    states: [reverse_proxy]
    system_users: [nginx, certbot]
    firewall:
      - {name: http, port: 80, from: [any]}
      - {name: https, port: 443, from: [any]}
      - {name: nginx-exporter, port: 9113, from: ['role:monitoring']}
  nextcloud:
    description: Nextcloud (files, calendar, contacts, office)
    states: [nextcloud]
    needs: [postgresql]
    system_users: [nextcloud, redis, cool]
    # Plain HTTP inside the network: the proxy is the only client (routes to
    # these ports open them too; the rule names the port for salt/nextcloud).
    firewall:
      - {name: http, port: 80, from: ['role:reverse_proxy']}
      - {name: collabora, port: 9980, from: ['role:reverse_proxy']}
  mailcow:
    nesting: true
    description: mailcow with SPF, DKIM and DMARC
    states: [docker, mailcow]
    system_users: [vmail, postfix, dovecot, dovenull, _rspamd, opendkim]
    firewall:
      - {name: smtp, port: 25, from: [any]}
      - {name: smtps, port: 465, from: [any]}
      - {name: submission, port: 587, from: [any]}
      - {name: imaps, port: 993, from: [any]}
  k3s:
    nesting: true
    description: k3s with the apps, the SPAs and External Secrets Operator
    states: [k3s]
    firewall:
      - {name: kubernetes-api, port: 6443, from: [admin, 'role:salt_master', 'role:deploy_runner', 'role:k3s']}
      - {name: kubelet-metrics, port: 10250, from: ['role:monitoring', 'role:k3s']}
      # Traefik (k3s's ingress) on the node: the apps' routes from the reverse proxy.
      - {name: ingress-http, port: 80, from: ['role:reverse_proxy']}
      # Flannel's VXLAN between the server and its agents.
      - {name: flannel-vxlan, proto: udp, port: 8472, from: ['role:k3s']}
  chat:
    description: the Go chat microservice
    states: [chat]
    needs: [postgresql, rabbitmq]
    system_users: [chat]
    # The public route (site.routes) opens http to the reverse proxy; admins
    # reach it directly, monitoring scrapes the metrics listener.
    firewall:
      - {name: http, port: 8080, from: [admin]}
      - {name: metrics, port: 9464, from: ['role:monitoring', admin]}
  gitlab_runner:
    nesting: true
    description: GitLab Runner with the Docker executor
    # the Docker executor: gitlab_runner includes docker (docs/docker.md)
    states: [docker, gitlab_runner]
    system_users: [gitlab-runner, docker]
    firewall:
      - {name: gitlab-runner-metrics, port: 9252, from: ['role:monitoring']}
  monitoring:
    description: Prometheus, Alertmanager, Loki and Grafana
    states: [monitoring]
    system_users: [grafana, loki, promtail, alertmanager]
    firewall:
      - {name: prometheus, port: 9090, from: [admin]}
      # The master posts the alerts it raises itself (the acme runner's CertificateRenewalFailing).
      - {name: alertmanager, port: 9093, from: [admin, 'role:salt_master']}
      # Bound to loopback: only the monitoring guest's Prometheus asks it.
      - {name: blackbox-exporter, port: 9115, from: ['role:monitoring']}
      - {name: grafana, port: 3000, from: [admin, 'role:reverse_proxy']}
      - {name: loki-push, port: 3100, from: [site]}
