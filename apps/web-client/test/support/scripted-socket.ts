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
