package lifecycle

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/ekm-dev/ekm/audit"
	"github.com/ekm-dev/ekm/httpx"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/metrics"
	"github.com/ekm-dev/ekm/store"
)

// callRecorder observes every KMS call: a metric for each, and for customer
// keys a kms.call audit event naming every request id sent, so the customer
// can find each call in its own KMS logs.
type callRecorder struct {
	st      store.Store
	metrics *metrics.Metrics
	now     func() time.Time
	log     *slog.Logger
}

func (r *callRecorder) ObserveCall(ctx context.Context, c kms.Call) {
	r.metrics.ObserveKMS(c.Key.Type, c.Op, c.Outcome(), c.Duration)
	if c.Key.ID == "" {
		return // the operator's default key: not a customer's KMS
	}
	ev := audit.KMSCall{ExternalKeyID: c.Key.ID, Operation: c.Op, Outcome: c.Outcome(),
		LatencyMS: float64(c.Duration.Microseconds()) / 1000}
	if httpx.RequestIDFromClient(ctx) {
		ev.ClientRequestID = httpx.RequestID(ctx)
	} else {
		ev.EKMRequestID = httpx.RequestID(ctx)
	}
	ev.RequestID = c.RequestID
	if len(c.RequestIDs) > 1 {
		ev.RequestIDs = c.RequestIDs
	}
	var ke *kms.Error
	if errors.As(c.Err, &ke) {
		ev.ErrorCode = ke.Code
	}
	// Recorded outside any request transaction, and even if the caller has
	// gone: the call to the customer's KMS happened either way. The caller's
	// context still supplies its values (the request id).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	rec := audit.Record(audit.Entry{OrgID: c.Key.OrgID, At: r.now()}, ev)
	if err := r.st.AppendAudit(ctx, rec); err != nil {
		r.log.Warn("recording KMS call failed", "external_key_id", c.Key.ID, "err", err)
	}
}
