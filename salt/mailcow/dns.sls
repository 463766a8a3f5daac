{#- Each mail domain's DNS records (MX, SPF, the DKIM key read back from
    mailcow's API, DMARC, autoconfig/autodiscover, SRV): sent to the site's DNS
    server by RFC 2136 signed with the TSIG key from Vault (read when the state
    applies), or, without one, written as a zone snippet for the registrar. #}
{%- from 'mailcow/map.jinja' import mc, mail %}
{%- set dns = mail.get('dns') %}
include:
  - mailcow.python
  - mailcow.mail
{%- for domain in (mail.get('domains') or {}) | sort %}

mailcow-dns-{{ domain }}-published:
  mail_dns.records_published:
    - name: {{ domain }}
    - mail_host: {{ mail.host }}
    - dmarc_report: {{ mail.dmarc.report }}
    - dmarc_policy: {{ mail.dmarc.policy }}
    - ttl: {{ mc.dns.ttl }}
{%-   if dns %}
    - server: {{ dns.server }}
    - port: {{ dns.port }}
    - tsig_name: {{ dns.tsig_name }}
    - tsig_algorithm: {{ dns.tsig_algorithm }}
    - tsig_secret_path: {{ dns.tsig_secret_path }}
    - tsig_secret_field: {{ dns.tsig_field }}
{%-   else %}
    - snippet_path: {{ mc.dns.snippet_dir }}/{{ domain }}.zone
{%-   endif %}
    - require:
      - pip: mailcow-python-packages-installed
      - mailcow_api: mailcow-mail-domain-{{ domain }}-dkim-present
{%- endfor %}
