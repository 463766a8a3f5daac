{#- nginx inside the guest, plain HTTP for the proxy: Nextcloud's documented
    rules (the .well-known redirects, the denied paths, the headers, PHP
    through the pool's socket) in the whole nginx.conf, checked by `nginx -t`
    as a candidate before it replaces the live one; a reload, never a restart. #}
{%- from 'nextcloud/map.jinja' import nextcloud, fqdn, http_port, fpm_socket, max_body, timeout %}
include:
  - nextcloud.package
  - nextcloud.php

nextcloud-nginx-default-site-absent:
  file.absent:
    - name: /etc/nginx/sites-enabled/default
    - require:
      - pkg: nextcloud-packages-installed

nextcloud-nginx-config-managed:
  file.managed:
    - name: /etc/nginx/nginx.conf
    - source: salt://nextcloud/files/nginx.conf.j2
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - check_cmd: /usr/sbin/nginx -t -q -c
    - tmp_ext: .conf
    - context:
        root: {{ nextcloud.root }}
        fqdn: {{ fqdn }}
        port: {{ http_port }}
        socket: {{ fpm_socket }}
        max_body: {{ max_body }}
        timeout: {{ timeout }}
        headers: {{ nextcloud.proxy.headers | json }}
    - require:
      - pkg: nextcloud-packages-installed

nextcloud-nginx-running:
  unit.running:
    - name: nginx
    - enable: true
    - reload: true
    - watch:
      - file: nextcloud-nginx-config-managed
      - file: nextcloud-nginx-default-site-absent
    - require:
      - unit: nextcloud-php-fpm-running
