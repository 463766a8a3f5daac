{#- The salt_master role: the control node's master is what the repository
    says: the checkout of the owner's repository (deploy key from Vault), the
    master's Python environment (Salt at the checkout's pin, in its venv), the
    master config rendered by `sitectl master-config` from etc/master.j2 (the
    reactors with it), the salt-cloud provider reading the Proxmox token from
    Vault at run time, the master's Vault AppRole profile, the service. #}
include:
  - salt_master.checkout
  - salt_master.install
  - salt_master.config
  - salt_master.service
