import { ParleyClient } from '../../public/parley-client.js';

/** A WebSocket whose server side the test plays: what the client sent, and whether it closed. */
export class ScriptedSocket {
  static opened: ScriptedSocket[] = [];
  readyState = 1;
  sent: Array<Record<string, unknown>> = [];
  closedWith?: number;
  onmessage?: (event: { data: string }) => void;
  onclose?: (event: { code: number }) => void;
  onerror?: () => void;
  constructor(readonly url: string) {
    ScriptedSocket.opened.push(this);
  }
  send(text: string) {
    this.sent.push(JSON.parse(text));
  }
  close(code: number) {
    this.closedWith = code;
  }
  receive(frame: Record<string, unknown>) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
}

/** A client on a ScriptedSocket, started and greeted with `hello` (its sync on connect fails: no REST). */
export async function onlineClient() {
  const client = new ParleyClient({
    restUrl: 'http://127.0.0.1:1',
    wsUrl: 'ws://gateway/v1/ws',
    getToken: async () => 'token',
    WebSocket: ScriptedSocket,
  });
  client.addEventListener('rejected', () => undefined);
  client.start();
  await jest.advanceTimersByTimeAsync(0);
  const socket = ScriptedSocket.opened.at(-1)!;
  socket.receive({ type: 'hello', user: 'bob', connId: 'c1' });
  return { client, socket };
}
