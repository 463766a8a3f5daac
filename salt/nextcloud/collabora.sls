{#- Nextcloud Office: Collabora Online (CODE) from Collabora's repository on
    this guest, plain HTTP behind the site's office route (TLS ends at the
    proxy), accepting WOPI hosts of this Nextcloud only; the richdocuments app
    pointed at it, its WOPI allow-list limited to this guest (Collabora's
    callbacks reach Nextcloud through the proxy, which names this guest in
    X-Forwarded-For). #}
{%- from 'nextcloud/map.jinja' import nextcloud, guest, fqdn, office_fqdn, collabora_port, php_bin %}
{%- set cb = nextcloud.collabora %}
{%- set key_script = '/usr/local/sbin/fetch-signing-key' %}
include:
  - nextcloud.application

nextcloud-collabora-key-script-managed:
  file.managed:
    - name: {{ key_script }}
    - source: salt://nextcloud/files/fetch-signing-key.sh
    - user: root
    - group: root
    - mode: '0755'

nextcloud-collabora-key-present:
  cmd.run:
    - name: >-
        {{ key_script | quote }} {{ cb.repository.key_url | quote }}
        {{ cb.repository.key_fingerprint | quote }} {{ cb.repository.keyring | quote }}
    - creates: {{ cb.repository.keyring }}
    - require:
      - file: nextcloud-collabora-key-script-managed
      - pkg: nextcloud-packages-installed

nextcloud-collabora-repo-managed:
  pkgrepo.managed:
    - name: deb [signed-by={{ cb.repository.keyring }}] {{ cb.repository.uri }} ./
    - file: /etc/apt/sources.list.d/collaboraonline.list
    - aptkey: false
    - require:
      - cmd: nextcloud-collabora-key-present

nextcloud-collabora-packages-installed:
  pkg.installed:
    - pkgs: {{ cb.packages | json }}
    - refresh: true
    - require:
      - pkgrepo: nextcloud-collabora-repo-managed

nextcloud-collabora-service-options-managed:
  file.managed:
    - name: /etc/systemd/system/coolwsd.service.d/platform.conf
    - makedirs: true
    - contents: |
        # Managed by Salt (nextcloud.collabora)
        [Service]
        ExecStart=
        ExecStart=/usr/bin/coolwsd --version --o:sys_template_path=/opt/cool/systemplate \
          --o:child_root_path=/opt/cool/child-roots --o:file_server_root_path=/usr/share/coolwsd \
          --o:net.listen=any --o:port={{ collabora_port }} --o:ssl.enable=false --o:ssl.termination=true \
          --o:server_name={{ office_fqdn }} --o:storage.wopi.alias_groups[@mode]=groups \
          --o:storage.wopi.alias_groups.group[0].host=https://{{ fqdn }}:443
    - require:
      - pkg: nextcloud-collabora-packages-installed

nextcloud-collabora-running:
  unit.running:
    - name: coolwsd
    - enable: true
    - watch:
      - file: nextcloud-collabora-service-options-managed
      - pkg: nextcloud-collabora-packages-installed

nextcloud-office-app-enabled:
  nextcloud_occ.apps_enabled:
    - apps: [richdocuments]
    - require:
      - nextcloud_occ: nextcloud-apps-enabled

nextcloud-office-app-config:
  nextcloud_occ.app_config:
    - name: richdocuments
    - values:
        wopi_url: https://{{ office_fqdn }}
        public_wopi_url: https://{{ office_fqdn }}
        wopi_allowlist: {{ guest.ip }}
    - require:
      - nextcloud_occ: nextcloud-office-app-enabled
      - unit: nextcloud-collabora-running

nextcloud-office-config-activated:
  cmd.run:
    - name: >-
        {{ php_bin | quote }} {{ (nextcloud.root ~ '/occ') | quote }} richdocuments:activate-config --no-interaction
    - runas: {{ nextcloud.user }}
    - cwd: {{ nextcloud.root }}
    - onchanges:
      - nextcloud_occ: nextcloud-office-app-config
