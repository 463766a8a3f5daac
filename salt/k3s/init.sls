{#- The k3s role: what k3s needs inside a Proxmox LXC guest, the release binary
    (pinned, checksum verified), its config from the site and the systemd unit;
    on the server, the cluster itself through the Kubernetes API (k3s modules):
    the node token into Vault, Vault's Kubernetes auth, External Secrets
    Operator and the apps; on agents, the join token from Vault. Without the
    binary (k3s:install:converge false, the lab) everything up to it
    converges and the rest is reported as not done, with the reason. #}
{%- from 'k3s/map.jinja' import install, is_server %}
include:
  - k3s.prerequisites
  - k3s.binary
  - k3s.config
{%- if install.converge %}
  - k3s.service
{%-   if is_server %}
  - k3s.cluster
{%-   endif %}
{%- endif %}
