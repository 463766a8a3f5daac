{#- The reverse_proxy role: nginx routing the site's public names to their
    guests, certificates from the site's ACME directory with certbot, renewal
    events for the master, and the nginx exporter. #}
include:
  - reverse_proxy.package
  - reverse_proxy.config
  - reverse_proxy.service
  - reverse_proxy.certificates
  - reverse_proxy.renewal
  - reverse_proxy.monitoring
