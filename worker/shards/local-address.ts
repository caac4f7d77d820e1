import { createSocket } from 'node:dgram';

/**
 * The local address this machine reaches a NATS URL's host from: where peers on the same network
 * can reach this worker. A connected UDP socket picks the route without sending anything.
 */
export async function localAddressTowards(natsUrl: string): Promise<string> {
  const first = natsUrl.split(',')[0]!.trim();
  const url = new URL(first.includes('://') ? first : `nats://${first}`);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (host === 'localhost' || host === '127.0.0.1' || host === '::1') return '127.0.0.1';
  const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.connect(Number(url.port || 4222), host, () => resolve());
    });
    return socket.address().address;
  } finally {
    socket.close();
  }
}
