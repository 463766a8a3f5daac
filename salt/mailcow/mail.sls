{#- The site's mail domains (with the role's limits and a DKIM key each),
    mailboxes (passwords generated into Vault, read by the state when it
    applies) and aliases, through mailcow's API. What the site no longer
    declares is deleted only when site:mail:remove_undeclared is true. #}
{%- from 'mailcow/map.jinja' import mc, mail, mailboxes_path %}
{%- set limits = mc.domain_limits %}
include:
  - mailcow.api
{%- for domain, spec in (mail.get('domains') or {}) | dictsort %}

mailcow-mail-domain-{{ domain }}-present:
  mailcow_api.domain_present:
    - name: {{ domain }}
    - description: {{ spec.description | json }}
    - mailboxes: {{ limits.mailboxes }}
    - aliases: {{ limits.aliases }}
    - quota: {{ limits.quota }}
    - maxquota: {{ limits.maxquota }}
    - defquota: {{ limits.defquota }}
    - require:
      - mailcow_api: mailcow-api-ready

mailcow-mail-domain-{{ domain }}-dkim-present:
  mailcow_api.dkim_present:
    - name: {{ domain }}
    - selector: {{ mc.dkim.selector }}
    - key_size: {{ mc.dkim.key_size }}
    - require:
      - mailcow_api: mailcow-mail-domain-{{ domain }}-present
{%-   for address, box in spec.mailboxes | dictsort %}
{%-     set local, at = address.split('@') %}

mailcow-mail-mailbox-{{ address }}-secret-generated:
  vault_server.secret_generated:
    - name: {{ mailboxes_path }}/{{ domain }}/{{ local }}
    - mount: {{ mc.vault.mount }}
    - fields:
        password: {length: {{ mc.vault.password.length }}, alphabet: {{ mc.vault.password.alphabet }}}

mailcow-mail-mailbox-{{ address }}-present:
  mailcow_api.mailbox_present:
    - name: {{ address }}
    - full_name: {{ box.name | json }}
    - quota: {{ box.quota }}
    - password_path: {{ mailboxes_path }}/{{ domain }}/{{ local }}
    - mount: {{ mc.vault.mount }}
    - require:
      - vault_server: mailcow-mail-mailbox-{{ address }}-secret-generated
      - mailcow_api: mailcow-mail-domain-{{ domain }}-present
{%-   endfor %}
{%-   for address, targets in spec.aliases | dictsort %}

mailcow-mail-alias-{{ address }}-present:
  mailcow_api.alias_present:
    - name: {{ address }}
    - goto: {{ targets | json }}
    - require:
      - mailcow_api: mailcow-mail-domain-{{ domain }}-present
{%-   endfor %}
{%- endfor %}
{%- if mail.get('remove_undeclared') %}
{%-   set domains = (mail.get('domains') or {}) %}

mailcow-mail-undeclared-absent:
  mailcow_api.only_declared:
    - name: undeclared
    - domains: {{ domains | list | sort | json }}
    - mailboxes: {{ domains.values() | map(attribute='mailboxes') | map('list') | sum(start=[]) | sort | json }}
    - aliases: {{ domains.values() | map(attribute='aliases') | map('list') | sum(start=[]) | sort | json }}
    - require:
      - mailcow_api: mailcow-api-ready
{%- endif %}
