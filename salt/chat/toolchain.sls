{#- The pinned Go toolchain (Debian's packages at exact versions, or go.dev's
    tarball checked against its sha256, unpacked so that go.root is its go/
    folder) and what the build needs: Debian's
    packaged Go libraries for a GOPATH build, git for a git source. #}
{%- from 'chat/map.jinja' import chat, source %}
{%- set packages = chat.build.packages + (['git'] if source.get('git') else []) %}
{%- if chat.go.archive %}

chat-toolchain-go-extracted:
  archive.extracted:
    - name: {{ chat.go.root.rsplit('/', 1)[0] }}
    - source: {{ chat.go.archive.url }}
    - source_hash: sha256={{ chat.go.archive.sha256 }}
    - if_missing: {{ chat.go.root }}/bin/go
    - user: root
    - group: root
{%- else %}

chat-toolchain-go-installed:
  pkg.installed:
    - pkgs:
{%-   for name, version in chat.go.packages | dictsort %}
      - {{ name }}: {{ version | json }}
{%-   endfor %}
{%- endif %}
{%- if packages %}

chat-toolchain-build-packages-installed:
  pkg.installed:
    - pkgs: {{ packages | json }}
{%- endif %}
