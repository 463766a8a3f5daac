{#- sshd: keys only, root never by password. The drop-in is checked with
    `sshd -t` before it replaces the running one. #}
{%- from 'common/map.jinja' import common, ports %}
include:
  - common.apt

common-sshd-privsep-dir-present:
  file.directory:
    - name: /run/sshd
    - mode: '0755'

common-sshd-config-managed:
  file.managed:
    - name: /etc/ssh/sshd_config.d/10-platform.conf
    - mode: '0644'
    - contents: |
        # Managed by Salt (common.sshd). Debian includes this before its own
        # sshd_config, and the first value of a keyword wins.
        Port {{ ports.get('ssh', '22') }}
        PermitRootLogin {{ common.sshd.permit_root_login }}
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PermitEmptyPasswords no
        PubkeyAuthentication yes
        AuthenticationMethods publickey
        MaxAuthTries 3
        LoginGraceTime 30
        X11Forwarding no
        AllowAgentForwarding no
        ClientAliveInterval 300
    - check_cmd: /usr/sbin/sshd -t -f
    - require:
      - pkg: common-apt-packages-installed
      - file: common-sshd-privsep-dir-present

common-sshd-service-running:
  unit.running:
    - name: ssh
    - enable: true
    - reload: true
    - watch:
      - file: common-sshd-config-managed
