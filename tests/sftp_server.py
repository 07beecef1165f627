"""A real SFTP server for the tests (asyncssh), serving one folder to one user.

  python tests/sftp_server.py --port 2222 --root DIR --user U --host-key KEYFILE \\
      --known-hosts OUT [--authorized-key KEY.pub]      (password from env SFTP_TEST_PASSWORD)

Generates its host key on first start and writes a known_hosts line for [127.0.0.1]:PORT, so the
client checks the host key as it would against a real server.
"""
import argparse
import asyncio
import os

import asyncssh


def main() -> None:
  parser = argparse.ArgumentParser()
  for flag in ('--host', '--root', '--user', '--host-key', '--known-hosts'):
    parser.add_argument(flag, required=True)
  parser.add_argument('--port', type=int, required=True)
  parser.add_argument('--authorized-key', default=None)
  a = parser.parse_args()
  password = os.environ['SFTP_TEST_PASSWORD']
  if not os.path.exists(a.host_key):
    asyncssh.generate_private_key('ssh-ed25519').write_private_key(a.host_key)
  key = asyncssh.read_private_key(a.host_key)
  with open(a.known_hosts, 'w') as f:
    f.write(f'[{a.host}]:{a.port} {key.export_public_key().decode().strip()}\n')

  class Server(asyncssh.SSHServer):
    def begin_auth(self, username):
      return True

    def password_auth_supported(self):
      return True

    def validate_password(self, username, pw):
      return username == a.user and pw == password

  async def serve():
    await asyncssh.listen(
        a.host, a.port, server_host_keys=[key], server_factory=Server,
        authorized_client_keys=a.authorized_key,
        sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=a.root),
        allow_scp=False)
    await asyncio.Event().wait()

  asyncio.run(serve())


if __name__ == '__main__':
  main()
