import { Type } from '@sinclair/typebox';
import { compile, createAjv } from '@parley/contracts';

describe('compile', () => {
  const Body = Type.Object({ name: Type.String({ minLength: 1 }) });

  it('compiles a schema once per Ajv, and each validator still names its own root', () => {
    const ajv = createAjv();
    const ajvCompile = jest.spyOn(ajv, 'compile');
    const asBody = compile(Body, { ajv, root: 'body' });
    const asRoot = compile(Body, { ajv });
    compile(Body, { ajv });
    expect(ajvCompile).toHaveBeenCalledTimes(1);
    expect(asBody('x')).toEqual({ ok: false, errors: ['body: must be object'] });
    expect(asRoot('x')).toEqual({ ok: false, errors: ['(root): must be object'] });
    expect(asRoot({ name: 'a' })).toEqual({ ok: true, value: { name: 'a' } });
  });

  it('compiles the same schema again for another Ajv', () => {
    const first = createAjv();
    const second = createAjv();
    const compiles = [jest.spyOn(first, 'compile'), jest.spyOn(second, 'compile')];
    compile(Body, { ajv: first });
    compile(Body, { ajv: second });
    expect(compiles.map((spy) => spy.mock.calls.length)).toEqual([1, 1]);
  });
});
