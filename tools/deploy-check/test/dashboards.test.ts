/**
 * The Grafana dashboard of deploy/k8s/components/dashboards is the one dashboard.ts writes, and the
 * component ships it as a ConfigMap Grafana's sidecar loads. Its queries are checked against the
 * fleet's metrics with the alerts' (alerts.test.ts).
 */
import { committedDashboard, dashboard, dashboardJson, dashboardQueries } from '../src/dashboard';
import { kubectlMissing, Manifests, renderWithComponents } from '../src/manifests';

/* eslint-disable @typescript-eslint/no-explicit-any */

describe('the Grafana dashboard', () => {
  it('is the file dashboard.ts writes (npx tsx tools/deploy-check/src/dashboard.ts --write)', () => {
    expect(committedDashboard()).toBe(dashboardJson());
  });

  it('filters every selector by the namespace variable, so one Grafana serves several fleets', () => {
    for (const { panel, expr } of dashboardQueries()) {
      const selectors = expr.match(/\{[^}]*\}/g) ?? [];
      expect([panel, selectors.length > 0]).toEqual([panel, true]);
      for (const selector of selectors)
        expect([panel, selector.includes('namespace=~"$namespace"')]).toEqual([panel, true]);
    }
  });

  it('lays its panels out without overlap', () => {
    const taken = new Set<string>();
    for (const panel of (dashboard() as any).panels) {
      const { x, y, w, h } = panel.gridPos;
      for (let i = x; i < x + w; i++)
        for (let j = y; j < y + h; j++) {
          expect([panel.title, i, j, taken.has(`${i},${j}`)]).toEqual([panel.title, i, j, false]);
          taken.add(`${i},${j}`);
        }
    }
  });
});

const missing = kubectlMissing();
(missing ? describe.skip : describe)('the dashboards component in the prod overlay', () => {
  it('renders one ConfigMap, labelled for the Grafana sidecar, holding the dashboard', () => {
    const rendered = new Manifests(renderWithComponents('prod', ['dashboards']));
    const [configMap, ...others] = rendered
      .all('ConfigMap')
      .filter((c) => c.metadata.name === 'parley-dashboard');
    expect(others).toEqual([]);
    expect(configMap!.metadata.labels).toMatchObject({ grafana_dashboard: '1' });
    expect(JSON.parse(configMap!.data['parley.json'])).toEqual(dashboard());
  });
});
