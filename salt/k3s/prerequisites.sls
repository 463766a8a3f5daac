{#- What k3s needs in a (privileged, nested) LXC guest that the guest itself can
    provide: /dev/kmsg for the kubelet (a link to the console, made at boot by
    systemd-tmpfiles: LXC gives containers no kernel log device), and the
    directories of its config and data. The host side (nesting, keyctl,
    AppArmor, cgroup devices) is the salt-cloud profile's: docs/k3s.md. #}
{%- from 'k3s/map.jinja' import k3s %}

k3s-prerequisites-kmsg-tmpfiles-managed:
  file.managed:
    - name: /etc/tmpfiles.d/k3s-kmsg.conf
    - contents: |
        # The kubelet reads /dev/kmsg; an LXC guest has none (salt: k3s.prerequisites).
        L /dev/kmsg - - - - /dev/console
    - mode: '0644'

k3s-prerequisites-kmsg-present:
  file.symlink:
    - name: /dev/kmsg
    - target: /dev/console
    # In-process (os.access F_OK, following a symlink as `test -e` does): no shell.
    - unless:
      - fun: file.access
        path: /dev/kmsg
        mode: f
    - require:
      - file: k3s-prerequisites-kmsg-tmpfiles-managed

k3s-prerequisites-config-dir-managed:
  file.directory:
    - name: {{ k3s.config_dir }}
    - mode: '0700'
    - makedirs: true

k3s-prerequisites-packages-installed:
  pkg.installed:
    - pkgs: [ca-certificates, iptables, conntrack]
