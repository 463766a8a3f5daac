{#- nginx, certbot (and its RFC 2136 plugin for dns-01) and the nginx
    exporter, in one apt transaction. #}
{%- from 'reverse_proxy/map.jinja' import rp, wildcard %}
reverse-proxy-packages-installed:
  pkg.installed:
    - pkgs: {{ (rp.packages + ([rp.dns_plugin_package] if wildcard else [])) | json }}
    - install_recommends: false
